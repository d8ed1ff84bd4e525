"""asyncio helpers both daemons use."""

from __future__ import annotations

import asyncio


def resolve(waiter: asyncio.Future[None]) -> None:
    """Wake whoever awaits `waiter`, once: a timer and an event may both try (call on its loop)."""
    if not waiter.done():
        waiter.set_result(None)
