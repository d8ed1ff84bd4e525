"""Who may call what (ORCH-080, ORCH-081, ORCH-150):

- `/health`, `/metrics` and `/openapi.json` (the API description) are open.
- `/v2/workers*` needs the cluster token (workers and pools hold it) or the admin token.
- `/v2/admin*`, `/v2/fleet*` and `POST /v2/workers/{id}/drain` need the admin token
  (`--admin-token`, specs/fleet.md FLT-007); the cluster token is not enough, since
  every pool host holds it. Without an admin token configured, admin routes are refused, unless
  orchestratord runs fully open (no keys, no tokens: loopback only, ORCH-006).
- Everything else needs a client API key when any is configured (a flag's, or a stored one:
  ORCH-300, made by `POST /v2/admin/keys`), or the admin token. A key given as `TENANT:KEY`, or
  stored for TENANT, makes the caller TENANT; the admin token makes it the admin, who sees
  every tenant. The caller reaches handlers as `request.state.caller` (orchestratord.http.caller),
  the credential's name for the audit trail as `request.state.credential` (ORCH-306), and a
  stored key's `StreamStop` as `STREAM_STOP`: its revocation ends the streams (ORCH-302).
- The web console's files (`/`, `/ui/...`) are open: they hold no secret (ORCH-220).
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping

from starlette.types import ASGIApp, Receive, Scope, Send

from orchestratord.domain.tenancy import ADMIN, OPEN, Caller
from orchestratord.http.errors import error_response
from orchestratord.runtime.keys import KeyRing, StoredKey
from shared.problem import ApiError, Forbidden, Unauthorized
from shared.sse import STREAM_STOP

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
        stored_keys: KeyRing | None = None,
        clock: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.app = app
        self.ring = stored_keys if stored_keys is not None else KeyRing()
        self.clock = clock
        self.keys = [k.encode() for k in key_tenants]
        self.tenants = list(key_tenants.values())
        self.cluster = [cluster_token.encode()] if cluster_token else []
        self.admin = [admin_token.encode()] if admin_token else []
        self.open = not (self.keys or self.cluster or self.admin)

    def _stored(self, presented: bytes | None) -> StoredKey | None:
        """The live stored key presented; Unauthorized for a revoked or expired one."""
        if presented is None or not self.ring.required:
            return None
        return self.ring.authenticate(presented, self.clock())

    def _refuse(self, presented: bytes | None, needs: str) -> ApiError:
        if presented is not None and (
            _match(presented, self.keys + self.cluster) is not None
            or self.ring.get_by_secret(presented) is not None
        ):
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
        credential = "admin" if is_admin else "open"
        state = scope.setdefault("state", {})
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
            if self.cluster and not is_admin:
                if _match(presented, self.cluster) is None:
                    err = self._refuse(presented, "cluster token")
                credential = "cluster"
            caller = ADMIN
        elif is_admin:
            caller = ADMIN
        elif self.keys or self.ring.required:
            n = _match(presented, self.keys)
            try:
                stored = self._stored(presented) if n is None else None
            except ApiError as e:  # revoked or expired: say so
                err = e
                stored = None
            if n is not None:
                caller = Caller(tenant=self.tenants[n])
                credential = f"flag-key:{self.tenants[n] or '-'}"
            elif stored is not None:
                caller = Caller(tenant=stored.tenant, key_id=stored.id)
                credential = f"key:{stored.id}"
                state[STREAM_STOP] = stored.stop
            elif err is None:
                err = Unauthorized(
                    f"an API key is required: {_how('API key')}"
                    if presented is None
                    else f"the API key given is not valid: {_how('API key')}"
                )
        if err is not None:
            await error_response(err, path)(scope, receive, send)
            return
        state["caller"] = caller
        state["credential"] = credential
        await self.app(scope, receive, send)


def is_console(path: str) -> bool:
    """The console's static files and the redirect to them: no secret, no token needed."""
    return path == "/" or path == "/ui" or path.startswith("/ui/")
