"""Following a task's event log: what every reader of a task stream runs.

Readers get the events after the id they name, in batches of whatever is ready, then wait for
more. Tokens after the first are batched per `--stream-coalesce-ms` window. When the last
reader of a task goes away (queued or running), a grace timer starts; the task is cancelled when it
expires with nobody reading. (The submitting stream cancels its task at once: that is its
response's `on_close`, which runs even when this generator never started.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, AsyncIterator

from orchestratord.runtime.core import ActiveTask, Core
from orchestratord.runtime.tasklog import TaskEvent

log = logging.getLogger("llorch.orchestratord")


async def follow(
    core: Core, active: ActiveTask, after: int | None, keepalive_s: float | None
) -> AsyncGenerator[list[TaskEvent], None]:
    i = 0 if after is None else max(0, after + 1)
    coalesce_s = core.settings.stream_coalesce_ms / 1000
    loop = asyncio.get_running_loop()
    tlog = active.log
    tlog.readers += 1
    if active.grace is not None:
        active.grace.cancel()
        active.grace = None
    sent_token_at: float | None = None  # when a batch ending in a token went out
    try:
        while True:
            if i < len(tlog.events):
                if sent_token_at is not None and not tlog.closed:
                    # Tokens after the first go out in bursts, one send per window: what
                    # comes within the window of the last send waits for its end (the first
                    # token is never delayed, nor the final event).
                    left = sent_token_at + coalesce_s - loop.time()
                    if left > 0:
                        await tlog.linger(left)
                n = len(tlog.events)
                batch = tlog.events[i:n]
                i = n
                yield batch
                if coalesce_s and batch[-1].event == "token":
                    now = loop.time()
                    fast = sent_token_at is not None and now - sent_token_at < 2 * coalesce_s
                    sent_token_at = now
                    if fast and not tlog.closed:
                        # Tokens come quicker than the window: wait it out at once, so that
                        # the tokens appended meanwhile wake nobody. A slower stream waits
                        # for its next token instead, and pays for no timer.
                        await tlog.linger(coalesce_s)
                continue
            if tlog.closed:
                return
            if not await tlog.wait(i, keepalive_s):
                yield []
    finally:
        tlog.readers -= 1
        if not tlog.closed and tlog.readers == 0:
            # Queued or running: a task whose client is gone stops holding its place.
            arm_grace(core, active)


async def flatten(batches: AsyncIterator[list[TaskEvent]]) -> AsyncIterator[TaskEvent]:
    async for batch in batches:
        for ev in batch:
            yield ev


def arm_grace(core: Core, active: ActiveTask) -> None:
    """A task nobody reads any more is cancelled after the grace period."""
    if active.grace is not None:
        return

    def expire() -> None:
        active.grace = None
        if active.log.readers == 0 and not active.log.closed:
            log.info("task %s lost its readers; cancelling", active.record.id)
            core.cancel_soon(active.record.id)

    loop = asyncio.get_running_loop()
    active.grace = loop.call_later(core.settings.disconnect_grace_ms / 1000, expire)
