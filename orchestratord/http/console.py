"""The web console's routes: the static files at `/ui`, and `/` redirecting there.

The files (orchestratord/console/) are plain HTML, CSS and JS shipped inside the package;
nothing is fetched from elsewhere at run time, and the Content-Security-Policy says so to the
browser. The files hold no secret, so they are served without a token; every call the console
makes is an API call with the user's bearer token.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONSOLE_DIR = Path(__file__).resolve().parents[1] / "console"
UI_PREFIX = "/ui"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-cache"),
]


class _Hardened:
    """Adds the console's security headers to every static response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


async def _to_console(request: Request) -> Response:
    return RedirectResponse(UI_PREFIX + "/", status_code=307)


def _routes() -> list[BaseRoute]:
    static = StaticFiles(directory=CONSOLE_DIR, html=True, check_dir=True)
    return [
        Route("/", _to_console, methods=["GET", "HEAD"]),
        Route(UI_PREFIX, _to_console, methods=["GET", "HEAD"]),
        Mount(UI_PREFIX, app=_Hardened(static), name="console"),
    ]


routes = _routes()
