"""The audit trail over HTTP (ORCH-306, ORCH-307): the one-line recorder every admin handler
calls, and `GET /v2/admin/audit`.

    audit(request, "fleet.put", "fleet", before=old, after=new)

names the credential the request came with (`request.state.credential`, set by the auth
middleware: `admin`, `cluster`, `open`, `key:<id>`; never a secret) and returns at once: the
write happens in the background, off the event loop (orchestratord.runtime.audit).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestratord.runtime.audit import AuditLog
from orchestratord.store import admin as admin_store
from shared.params import FieldReader

MAX_LIMIT = 1000


def who(request: Request) -> str:
    credential = getattr(request.state, "credential", None)
    return credential if isinstance(credential, str) else "open"


def audit(
    request: Request,
    action: str,
    target: str | None = None,
    *,
    before: Any = None,
    after: Any = None,
) -> None:
    """Record one admin action of this request (secrets in before/after are redacted)."""
    log: AuditLog | None = getattr(request.state, "audit", None)
    if log is not None:
        log.record(who(request), action, target, before=before, after=after)


def _int_params(params: Any, names: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = dict(params)
    for name in names:
        if name in out:
            with contextlib.suppress(ValueError):  # else FieldReader says "must be an integer"
                out[name] = int(out[name])
    return out


async def list_audit(request: Request) -> Response:
    """Newest first: `since` (unix ms), `action` (exact, or a prefix ending in '.'), `limit`."""
    r = FieldReader(
        _int_params(request.query_params, ("since", "limit")), known={"since", "action", "limit"}
    )
    since = r.integer("since", None, 0, 2**62)
    action = r.string("action", max_len=64)
    limit = r.integer("limit", 100, 1, MAX_LIMIT) or 100
    r.raise_if_failed()
    log: AuditLog = request.state.audit
    await log.flush()  # what was just done is listed
    rows = await asyncio.to_thread(
        admin_store.list_audit, log.store, since_ms=since, action=action, limit=limit
    )
    return JSONResponse({"entries": rows})


routes = [Route("/v2/admin/audit", list_audit, methods=["GET"])]
