"""Retention of finished task records: the database keeps them `--retain-finished-s`, then
they go (ORCH-171), so the tasks table does not grow for ever."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from orchestratord.store.db import Store

log = logging.getLogger("llorch.orchestratord.db")


def prune_interval_s(retention_s: float) -> float:
    """Often enough that a record outlives its retention by a tenth at most (1 s to 10 min)."""
    return min(600.0, max(1.0, retention_s / 10))


async def prune_loop(store: Store, clock: Callable[[], int], retention_s: float) -> None:
    """Delete expired records now and then, off the event loop; a failed pass is retried."""
    every = prune_interval_s(retention_s)
    while True:
        try:
            gone = await asyncio.to_thread(store.prune_finished, clock() - int(retention_s * 1000))
            if gone:
                log.info("pruned %d finished task record(s) past retention", gone)
        except Exception:
            log.exception("pruning finished tasks failed; will retry")
        await asyncio.sleep(every)
