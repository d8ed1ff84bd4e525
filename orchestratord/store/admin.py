"""The admin records in the database: API keys (ORCH-300) and the audit trail (ORCH-306).

Synchronous, like `Store`: callers on the event loop run these in a thread.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa

from orchestratord.store.db import Store, api_keys, audit_log

KEY_COLUMNS = [c.name for c in api_keys.columns]


def load_keys(store: Store) -> list[dict[str, Any]]:
    with store.engine.connect() as c:
        return [row._asdict() for row in c.execute(sa.select(api_keys))]


def insert_key(store: Store, row: dict[str, Any]) -> None:
    with store.engine.begin() as c:
        c.execute(api_keys.insert().values({k: row[k] for k in KEY_COLUMNS}))


def revoke_key(store: Store, key_id: str, revoked_ms: int) -> None:
    """Revoked once: a second revoke keeps the first time."""
    with store.engine.begin() as c:
        c.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_ms.is_(None))
            .values(revoked_ms=revoked_ms)
        )


def save_last_used(store: Store, stamps: Iterable[tuple[str, int]]) -> None:
    params = [{"kid": key_id, "used": used} for key_id, used in stamps]
    if not params:
        return
    statement = (
        api_keys.update()
        .where(api_keys.c.id == sa.bindparam("kid"))
        .values(last_used_ms=sa.bindparam("used"))
    )
    with store.engine.begin() as c:
        c.execute(statement, params)


def append_audit(store: Store, rows: list[dict[str, Any]]) -> None:
    """Insert audit entries: {at_ms, who, action, target, before, after} (before/after any
    JSON value, already redacted)."""
    if not rows:
        return
    values = [
        {
            "at_ms": r["at_ms"],
            "who": r["who"],
            "action": r["action"],
            "target": r.get("target"),
            "before_json": _json(r.get("before")),
            "after_json": _json(r.get("after")),
        }
        for r in rows
    ]
    with store.engine.begin() as c:
        c.execute(audit_log.insert(), values)


def list_audit(
    store: Store, *, since_ms: int | None, action: str | None, limit: int
) -> list[dict[str, Any]]:
    """Newest first; `action` matches exactly, or a prefix when it ends with '.' (`keys.`)."""
    q = sa.select(audit_log)
    if since_ms is not None:
        q = q.where(audit_log.c.at_ms >= since_ms)
    if action is not None:
        if action.endswith("."):
            q = q.where(audit_log.c.action.startswith(action, autoescape=True))
        else:
            q = q.where(audit_log.c.action == action)
    q = q.order_by(audit_log.c.at_ms.desc(), audit_log.c.seq.desc()).limit(limit)
    with store.engine.connect() as c:
        rows = c.execute(q).all()
    return [
        {
            "seq": r.seq,
            "at_ms": r.at_ms,
            "who": r.who,
            "action": r.action,
            "target": r.target,
            "before": json.loads(r.before_json) if r.before_json is not None else None,
            "after": json.loads(r.after_json) if r.after_json is not None else None,
        }
        for r in rows
    ]


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)
