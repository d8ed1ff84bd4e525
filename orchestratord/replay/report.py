"""Figures of a replay, per policy (FLT-053): queue wait p50/p99, rejections, per-tenant share,
worker utilisation; as JSON and as a table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypedDict

from orchestratord.replay.sim import Outcome
from orchestratord.replay.trace import Trace


class PolicyFigures(TypedDict):
    policy: str
    tasks: int
    served: int
    rejected: dict[str, int]
    unserved: int
    queue_wait_ms: dict[str, int]  # p50, p99, max
    tenant_share: dict[str, float]  # share of served service time, by tenant ("" = none)
    worker_utilisation: dict[str, float]  # busy slot-time / (slots x replayed span)
    fallbacks: dict[str, int]
    cached_share: float  # prompt tokens found in the simulated caches / all served (ORCH-405)


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile: a value that occurred, the same on every run."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def figures(name: str, trace: Trace, out: Outcome) -> PolicyFigures:
    waits = sorted(out.waits_ms.values())
    span = max(1, out.end_ms - out.start_ms)
    total_service = sum(out.service_by_tenant.values()) or 1
    slots = {w.id: w.slots for w in trace.workers}
    return {
        "policy": name,
        "tasks": len(trace.tasks),
        "served": len(waits),
        "rejected": dict(sorted(out.rejected.items())),
        "unserved": out.unserved,
        "queue_wait_ms": {
            "p50": percentile(waits, 50),
            "p99": percentile(waits, 99),
            "max": waits[-1] if waits else 0,
        },
        "tenant_share": {
            k: round(v / total_service, 4) for k, v in sorted(out.service_by_tenant.items())
        },
        "worker_utilisation": {
            w: round(out.busy_ms[w] / (slots[w] * span), 4) for w in sorted(slots)
        },
        "fallbacks": dict(sorted(out.fallbacks.items())),
        "cached_share": round(out.cached_tokens / out.prompt_tokens, 4)
        if out.prompt_tokens
        else 0.0,
    }


def table(results: Sequence[PolicyFigures]) -> str:
    """One column per policy, one row per figure."""
    rows: list[list[str]] = [["", *(r["policy"] for r in results)]]

    def row(label: str, values: list[str]) -> None:
        rows.append([label, *values])

    row("tasks", [str(r["tasks"]) for r in results])
    row("served", [str(r["served"]) for r in results])
    row("unserved", [str(r["unserved"]) for r in results])
    codes = sorted({c for r in results for c in r["rejected"]})
    for c in codes:
        row(f"rejected {c}", [str(r["rejected"].get(c, 0)) for r in results])
    for p in ("p50", "p99", "max"):
        row(f"queue wait {p} ms", [str(r["queue_wait_ms"][p]) for r in results])
    for t in sorted({t for r in results for t in r["tenant_share"]}):
        row(f"share {t or '(none)'}", [f"{r['tenant_share'].get(t, 0):.1%}" for r in results])
    for w in sorted({w for r in results for w in r["worker_utilisation"]}):
        row(f"util {w}", [f"{r['worker_utilisation'].get(w, 0):.1%}" for r in results])
    row("prompt tokens cached", [f"{r['cached_share']:.1%}" for r in results])
    for f in sorted({f for r in results for f in r["fallbacks"]}):
        row(f"fallbacks {f}", [str(r["fallbacks"].get(f, 0)) for r in results])
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
        for r in rows
    )
