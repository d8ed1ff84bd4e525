"""The garbage collector and a long-running daemon.

A daemon's start-up leaves hundreds of thousands of long-lived objects (modules, SQLAlchemy's
tables, compiled policies, the tokenizer's tables). CPython's cyclic collector walks all of
them in every full collection: a 40-50 ms pause of the event loop, measured in orchestratord
in a burst of submissions, each time one comes. `freeze_startup_heap` moves what exists at the
end of start-up out of the collector's view for good (`gc.freeze`), so later collections walk
only what the daemon allocated since: tasks, streams, requests.
"""

from __future__ import annotations

import gc

_frozen = False


def freeze_startup_heap() -> None:
    """Collect once, then freeze what survives: call when start-up is done. Only the first call
    in a process does anything (a process that hosts several apps, as tests do, pays once)."""
    global _frozen
    if _frozen:
        return
    _frozen = True
    gc.collect()
    gc.freeze()
