"""Who may call what (ORCH-080, ORCH-081, ORCH-150):

- `/health`, `/metrics` and `/openapi.json` (the API description) are open.
- `/v2/workers*` needs the cluster token (workers and pools hold it) or the admin token.
- `/v2/admin*`, `/v2/fleet*` and `POST /v2/workers/{id}/drain` need the admin token
  (`--admin-token`, specs/fleet.md FLT-007); the cluster token is not enough, since
  every pool host holds it. Without an admin token configured, admin routes are refused, unless
  orchestratord runs fully open (no keys, no tokens: loopback only, ORCH-006).
- Everything else needs a client API key when any is configured, or the admin token. A key
  given as `TENANT:KEY` makes the caller TENANT; the admin token makes it the admin, who sees
  every tenant. The caller reaches handlers as `request.state.caller` (orchestratord.http.caller).
- The web console's files (`/`, `/ui/...`) are open: they hold no secret (ORCH-220).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from orchestratord.domain.tenancy import ADMIN, OPEN, Caller
from orchestratord.http.errors import error_response
from shared.problem import ApiError, Forbidden, Unauthorized

WORKER_PREFIX = "/v2/workers"
ADMIN_PREFIXES = ("/v2/admin", "/v2/fleet")  # the fleet is admin's: specs/fleet.md FLT-007


def _admin_path(path: str) -> bool:
    """Admin routes: /v2/admin*, /v2/fleet*, and a worker's drain and undrain (FLT-030)."""
    return path.startswith(ADMIN_PREFIXES) or (
        path.startswith(WORKER_PREFIX + "/") and path.endswith(("/drain", "/undrain"))
    )


# What would fix a refusal (ORCH-370): the `llorch` flag and the variable it also reads.
FIX = {
    "admin token": "--admin-token or LLORCH_ADMIN_TOKEN",
    "cluster token": "--cluster-token or LLORCH_CLUSTER_TOKEN (or the admin token)",
    "API key": "--api-key or LLORCH_API_KEY (or the admin token)",
}


def _how(needs: str) -> str:
    return f"send it as 'Authorization: Bearer <{needs}>'; llorch takes {FIX[needs]}"


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
    """Pure ASGI middleware; with no keys and no tokens configured everything is open."""

    def __init__(
        self,
        app: ASGIApp,
        key_tenants: Mapping[str, str | None],
        cluster_token: str | None,
        admin_token: str | None = None,
    ) -> None:
        self.app = app
        self.keys = [k.encode() for k in key_tenants]
        self.tenants = list(key_tenants.values())
        self.cluster = [cluster_token.encode()] if cluster_token else []
        self.admin = [admin_token.encode()] if admin_token else []
        self.open = not (self.keys or self.cluster or self.admin)

    def _refuse(self, presented: bytes | None, needs: str) -> ApiError:
        if presented is not None and _match(presented, self.keys + self.cluster) is not None:
            return Forbidden(f"this endpoint needs the {needs}, not the one sent: {_how(needs)}")
        if presented is None:
            return Unauthorized(f"the {needs} is required: {_how(needs)}")
        return Unauthorized(f"the {needs} given is not valid: {_how(needs)}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS or is_console(path):
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope)
        is_admin = bool(self.admin) and _match(presented, self.admin) is not None
        err: ApiError | None = None
        caller: Caller = OPEN
        if _admin_path(path):
            if not (is_admin or self.open):
                err = (
                    self._refuse(presented, "admin token")
                    if self.admin
                    else Forbidden(
                        "admin routes are off: start orchestratord with --admin-token "
                        "(or LLORCH_ADMIN_TOKEN)"
                    )
                )
            caller = ADMIN
        elif path.startswith(WORKER_PREFIX):
            if self.cluster and not is_admin and _match(presented, self.cluster) is None:
                err = self._refuse(presented, "cluster token")
            caller = ADMIN
        elif is_admin:
            caller = ADMIN
        elif self.keys:
            n = _match(presented, self.keys)
            if n is None:
                err = Unauthorized(
                    f"an API key is required: {_how('API key')}"
                    if presented is None
                    else f"the API key given is not valid: {_how('API key')}"
                )
            else:
                caller = Caller(tenant=self.tenants[n])
        if err is not None:
            await error_response(err, path)(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


def is_console(path: str) -> bool:
    """The console's static files and the redirect to them: no secret, no token needed."""
    return path == "/" or path == "/ui" or path.startswith("/ui/")
