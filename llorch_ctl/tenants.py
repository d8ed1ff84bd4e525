"""`llorch limits get|set` and `llorch usage`: tenants' limits and usage through the SDK
(CTL-080..CTL-082)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from llorch_ctl.orch import OrchSettings, _table, client

LIMIT_NAMES = ("concurrency", "rpm", "tpm", "daily_tokens", "monthly_tokens")
USAGE_COLUMNS = ("prompt_tokens", "cached_tokens", "completion_tokens", "total_tokens")


def parse_limit(flag: str, text: str) -> int | None:
    """A limit flag's value: a whole number >= 0, or `none` for no limit; ValueError else."""
    if text.strip().lower() in ("none", "off", "unlimited"):
        return None
    if not text.strip().isdigit():
        raise ValueError(f"{flag} {text!r}: give a whole number >= 0, or 'none' for no limit")
    return int(text)


def get_limits(s: OrchSettings, tenant: str) -> dict[str, Any]:
    with client(s) as c:
        return c.limits(tenant)


def set_limits(s: OrchSettings, tenant: str, changes: Mapping[str, Any]) -> dict[str, Any]:
    """Change only the limits given: the others keep what the tenant has now (PUT replaces
    the whole record, so the current one is read first)."""
    with client(s) as c:
        current = c.limits(tenant)["limits"]
        return c.set_limits(tenant, {**current, **changes})


def render_limits(reply: Mapping[str, Any]) -> str:
    limits, usage = reply.get("limits", {}), reply.get("usage", {})

    def shown(name: str) -> str:
        value = limits.get(name)
        return "none" if value is None else str(value)

    window = usage.get("window_s", "?")
    used = {
        "concurrency": f"{usage.get('open', 0)} open",
        "rpm": f"{usage.get('requests', 0)} in this {window:g} s window"
        if isinstance(window, int | float)
        else "",
        "tpm": f"{usage.get('tokens', 0)} in this window",
        "daily_tokens": f"{usage.get('tokens_today', 0)} today (UTC)",
        "monthly_tokens": f"{usage.get('tokens_month', 0)} this month (UTC)",
    }
    rows = [("LIMIT", "VALUE", "USED")]
    rows += [(name, shown(name), used[name]) for name in LIMIT_NAMES]
    rows.append(("weight", str(limits.get("weight", 1.0)), ""))
    return f"tenant {reply.get('tenant')}\n" + _table(rows)


def usage(
    s: OrchSettings, since: str, until: str | None, by: str, tenant: str | None
) -> dict[str, Any]:
    with client(s) as c:
        return c.usage(since=since, until=until, by=by, tenant=tenant)


def render_usage(reply: Mapping[str, Any]) -> str:
    by = str(reply.get("by", "tenant"))
    rows_in: Sequence[Mapping[str, Any]] = reply.get("usage", [])
    if not rows_in:
        return "no usage\n"
    head = "hour_ms" if by == "hour" else by
    columns = (head, "tasks", "errors", "prompt", "cached", "completion", "total")
    rows = [tuple(c.upper() for c in columns)]
    for r in rows_in:
        value = r.get(head)
        rows.append(
            (
                "-" if value is None else str(value),
                str(r.get("tasks", 0)),
                str(r.get("errors", 0)),
                *(str(r.get(c, 0)) for c in USAGE_COLUMNS),
            )
        )
    return _table(rows)
