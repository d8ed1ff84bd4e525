"""The query of `GET /v2/tasks` and its opaque cursor (specs/orchestrator.md ORCH-152)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping

from orchestratord.domain.tasks import TaskQuery, TaskRecord
from orchestratord.domain.tenancy import Caller
from shared.params import FieldReader
from shared.problem import Forbidden
from shared.wire import TASK_STATUSES

MAX_LIMIT = 500


def encode_cursor(last: TaskRecord) -> str:
    raw = json.dumps([last.created_ms, last.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[int, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, task_id = json.loads(raw)
    except (ValueError, TypeError):
        return None
    if isinstance(created, int) and isinstance(task_id, str):
        return created, task_id
    return None


def parse_list_query(params: Mapping[str, str], caller: Caller) -> TaskQuery:
    """The validated query; InvalidParams lists every bad parameter, Forbidden a client key
    asking for another tenant."""

    def integer(name: str) -> object:
        raw = params.get(name)
        if raw is None:
            return None
        try:
            return int(raw)
        except ValueError:
            return raw  # FieldReader says "must be an integer"

    r = FieldReader(
        {
            k: v
            for k, v in {**params, "limit": integer("limit"), "since": integer("since")}.items()
            if v is not None
        },
        known={"status", "model", "tenant", "since", "limit", "cursor"},
    )
    status = r.choice("status", "", ("", *TASK_STATUSES)) or None
    model = r.string("model", max_len=256)
    tenant = r.string("tenant", max_len=128)
    since = r.integer("since", None, 0, 2**62)
    limit = r.integer("limit", 50, 1, MAX_LIMIT) or 50
    cursor = r.string("cursor", max_len=1024)
    before = _decode_cursor(cursor) if cursor is not None else None
    if cursor is not None and before is None:
        r.fail("cursor", "is not a cursor this server gave out")
    r.raise_if_failed()
    if tenant is not None and not caller.sees_all and tenant != caller.tenant:
        raise Forbidden(
            "only the admin token lists other tenants' tasks: llorch takes --admin-token or "
            "LLORCH_ADMIN_TOKEN"
        )
    restricted = not caller.sees_all or tenant is not None
    return TaskQuery(
        restricted=restricted,
        tenant=tenant if caller.sees_all else caller.tenant,
        status=status,
        model=model,
        since_ms=since,
        before=before,
        limit=limit,
    )
