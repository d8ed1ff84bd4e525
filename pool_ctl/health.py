"""A worker's GET /health, asked with a short timeout; no answer is an answer too."""

from __future__ import annotations

from typing import Any

import httpx


def fetch(url: str, timeout: float = 2.0) -> dict[str, Any] | None:
    """The worker's health object, or None when it does not answer a valid one in time."""
    try:
        r = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
        data = r.json()
    except (httpx.HTTPError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("status"), str) else None
