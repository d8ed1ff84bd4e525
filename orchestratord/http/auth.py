"""Who may call what: API keys for the client API, the cluster token for workers and admin.

- `/v2/workers*` and `/v2/admin*` need the cluster token (when one is configured); a valid
  client API key there is 403, anything else 401.
- Everything else except the open paths needs an API key (when any is configured). A key given
  as `TENANT:KEY` makes requests with it belong to TENANT: `request.state.tenant`.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from shared.problem import ApiError, Forbidden, Unauthorized

CLUSTER_PREFIXES = ("/v2/workers", "/v2/admin")
OPEN_PATHS = frozenset({"/health", "/metrics", "/openapi.json"})


def _bearer(scope: Scope) -> bytes | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, presented = value.partition(b" ")
            return presented.strip() if scheme.lower() == b"bearer" else None
    return None


def _match(presented: bytes | None, secrets: list[bytes]) -> int | None:
    """Index of the matching secret, comparing against all so timing tells nothing."""
    if presented is None:
        return None
    hits = [hmac.compare_digest(presented, s) for s in secrets]
    return hits.index(True) if any(hits) else None


class OrchestratorAuth:
    """Pure ASGI middleware; with no keys and no token configured everything is open."""

    def __init__(
        self, app: ASGIApp, key_tenants: Mapping[str, str | None], cluster_token: str | None
    ) -> None:
        self.app = app
        self.keys = [k.encode() for k in key_tenants]
        self.tenants = list(key_tenants.values())
        self.cluster = [cluster_token.encode()] if cluster_token else []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope)
        if path.startswith(CLUSTER_PREFIXES):
            if self.cluster and _match(presented, self.cluster) is None:
                if self.keys and _match(presented, self.keys) is not None:
                    err: ApiError = Forbidden(
                        "this endpoint needs the cluster token, not a client API key"
                    )
                else:
                    err = Unauthorized("the cluster token is required")
                await err.response(path)(scope, receive, send)
                return
        elif self.keys:
            n = _match(presented, self.keys)
            if n is None:
                await Unauthorized().response(path)(scope, receive, send)
                return
            tenant = self.tenants[n]
            if tenant is not None:
                scope.setdefault("state", {})["tenant"] = tenant
        await self.app(scope, receive, send)
