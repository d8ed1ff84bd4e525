"""The request body cap of both daemons, applied before anything reads or parses a body.

A body over the limit is refused with 413 `PAYLOAD_TOO_LARGE`: at once when its
Content-Length says so, else as soon as the bytes received pass the limit, so a client can
never make a daemon hold more than the limit of one body in memory.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.params import MAX_PROMPT_CHARS
from shared.problem import PayloadTooLarge, Render, problem_response

# The largest valid request: a prompt of MAX_PROMPT_CHARS characters, each escaped in JSON as
# \\uXXXX (6 bytes), plus room for every other field.
MAX_BODY_BYTES = 6 * MAX_PROMPT_CHARS + 256 * 1024


class BodyLimit:
    """Pure ASGI middleware: refuse request bodies over `max_bytes` with 413."""

    def __init__(
        self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, render: Render = problem_response
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.render = render  # the app's error rendering: this answers before its handlers

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the request body is over the limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    reply = self.render(self._too_large(), scope.get("path"))
                    await reply(scope, receive, send)
                    return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    # Raised inside the handler's body read: rendered by the app's handlers.
                    raise self._too_large()
            return message

        await self.app(scope, limited, send)
