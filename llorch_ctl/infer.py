"""`llorch infer --worker HOST:PORT`: stream tokens straight from one worker's POST /execute."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import httpx
from httpx_sse import SSEError, connect_sse

from llorch_ctl.errors import ApiFailed, ConfigError, HttpUnreachable


def worker_url(address: str) -> str:
    """`HOST:PORT` (or a full http(s) URL) -> base URL; bad input is a usage error."""
    if address.startswith(("http://", "https://")):
        return address.rstrip("/")
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--worker {address!r}: expected HOST:PORT, e.g. 127.0.0.1:8001")
    return f"http://{host}:{port}"


def problem_line(resp: httpx.Response) -> str:
    """`STATUS CODE: detail` from a problem+json body, or the raw text when it is not one."""
    try:
        body = json.loads(resp.read())
    except ValueError:
        return f"HTTP {resp.status_code}: {resp.text[:200].strip()}"
    if isinstance(body, dict):
        code = body.get("code", "")
        detail = body.get("detail") or body.get("title") or ""
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            detail += (
                " ("
                + "; ".join(
                    f"{e.get('field')}: {e.get('message')}" for e in errors if isinstance(e, dict)
                )
                + ")"
            )
        return f"HTTP {resp.status_code} {code}: {detail}".strip()
    return f"HTTP {resp.status_code}"


def stream_execute(
    base_url: str,
    body: Mapping[str, Any],
    *,
    token: str | None,
    on_token: Callable[[str], None],
    on_event: Callable[[str, dict[str, Any]], None] | None = None,
    timeout: float = 30.0,
) -> dict[str, Any]:
    """POST /execute and call `on_token` per token as it arrives; returns the `end` event."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with (
            httpx.Client(timeout=httpx.Timeout(timeout, read=None)) as client,
            connect_sse(client, "POST", base_url + "/execute", json=body, headers=headers) as es,
        ):
            if es.response.status_code != 200:
                raise ApiFailed(f"worker {base_url} refused the job: {problem_line(es.response)}")
            for sse in es.iter_sse():
                data = json.loads(sse.data) if sse.data else {}
                if on_event is not None:
                    on_event(sse.event, data)
                if sse.event == "token":
                    on_token(str(data.get("t", "")))
                elif sse.event == "end":
                    return dict(data)
                elif sse.event == "error":
                    code, msg = data.get("code"), data.get("message")
                    raise ApiFailed(f"worker {base_url} failed the job: {code}: {msg}")
    except httpx.TransportError as e:
        raise HttpUnreachable(f"cannot reach worker {base_url}: {e}") from e
    except (SSEError, ValueError) as e:
        raise ApiFailed(f"worker {base_url} sent an unreadable stream: {e}") from e
    raise ApiFailed(f"worker {base_url} closed the stream before an end event")
