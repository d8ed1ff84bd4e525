"""Bearer-token guard for llorch's daemons, as a pure ASGI middleware."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.problem import Unauthorized


class BearerAuth:
    """Refuse HTTP requests without `Authorization: Bearer <one of tokens>`.

    Paths in `open_paths` (liveness probes) pass without a token. With no tokens configured the
    middleware is not installed at all, so a daemon is open only when its operator chose that.
    """

    def __init__(self, app: ASGIApp, tokens: Collection[str], open_paths: Collection[str] = ()):
        self.app = app
        self.tokens = [t.encode() for t in tokens]
        self.open_paths = frozenset(open_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        if not self.authorized(scope):
            response = Unauthorized(
                "the cluster token is required: send it as 'Authorization: Bearer <token>'; "
                "llorch takes --cluster-token or LLORCH_CLUSTER_TOKEN"
            ).response(scope["path"])
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def authorized(self, scope: Scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, presented = value.partition(b" ")
                if scheme.lower() != b"bearer":
                    return False
                # compare_digest against every token so timing does not reveal which matched.
                return any([hmac.compare_digest(presented.strip(), t) for t in self.tokens])
        return False


def is_loopback(host: str) -> bool:
    """Whether listening on `host` exposes a server to this machine alone."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False
