"""The SSE response of a task: batches of pre-framed events, one send per batch.

It watches for the client's disconnect itself, so a reader that goes away is noticed at once
(not only at the next write), and the event source is closed deterministically.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator

import anyio
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from orchestratord.tasks import TaskEvent
from shared.sse import encode_comment

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class EventStreamResponse(Response):
    media_type = "text/event-stream"

    def __init__(
        self, batches: AsyncGenerator[list[TaskEvent], None], headers: dict[str, str] | None = None
    ) -> None:
        self.batches = batches
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            async with contextlib.aclosing(self.batches) as batches:
                try:
                    await send(
                        {"type": "http.response.start", "status": 200, "headers": self.raw_headers}
                    )
                    async for batch in batches:
                        body = b"".join([ev.frame for ev in batch]) if batch else encode_comment()
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                    await send({"type": "http.response.body", "body": b"", "more_body": False})
                except OSError:
                    pass  # ASGI 2.4 servers raise on a write to a closed connection
            tg.cancel_scope.cancel()
