"""`orchestratord replay --db PATH --policy CANDIDATE.star [--baseline OTHER.star] [--json]`.

Replays the recorded tasks of an orchestratord database under the baseline policy (the
built-in one unless --baseline) and the candidate, and prints the figures side by side as a
table, or as JSON with --json. Failures are one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from orchestratord.policy import PolicyEngine
from orchestratord.replay.report import PolicyFigures, figures, table
from orchestratord.replay.sim import simulate
from orchestratord.replay.trace import Trace, load_trace

# Generous, so that a loaded machine does not turn a policy call into a fallback and the
# figures stay the same from run to run; fallbacks are counted in the output all the same.
REPLAY_BUDGET_MS = 1000.0


def run(
    trace: Trace,
    policies: Sequence[tuple[str, Path | None]],
    *,
    queue_capacity: int = 1024,
    full_policy: str = "reject",
    prefetch: int = 0,
    budget_ms: float = REPLAY_BUDGET_MS,
) -> list[PolicyFigures]:
    """Figures per (name, policy file or None for the built-in), in the order given."""
    results = []
    for name, path in policies:
        engine = PolicyEngine.from_file(path, budget_ms=budget_ms)
        out = simulate(
            trace,
            engine,
            queue_capacity=queue_capacity,
            full_policy="drop-lru" if full_policy == "drop-lru" else "reject",
            prefetch=prefetch,
        )
        results.append(figures(name, trace, out))
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orchestratord replay",
        description="Replay recorded tasks under a candidate policy and a baseline.",
    )
    p.add_argument("--db", required=True, help="orchestratord database file (or a URL)")
    p.add_argument("--policy", required=True, type=Path, help="candidate policy file")
    p.add_argument("--baseline", type=Path, help="baseline policy file [default: built-in]")
    p.add_argument("--queue-capacity", type=int, default=1024)
    p.add_argument("--queue-full-policy", choices=("reject", "drop-lru"), default="reject")
    p.add_argument("--worker-prefetch", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def main(argv: Sequence[str]) -> int:
    args = parser().parse_args(list(argv))
    try:
        trace = load_trace(args.db)
        baseline = ("baseline" if args.baseline else "built-in", args.baseline)
        results = run(
            trace,
            [baseline, ("candidate", args.policy)],
            queue_capacity=args.queue_capacity,
            full_policy=args.queue_full_policy,
            prefetch=args.worker_prefetch,
        )
    except Exception as e:
        detail = getattr(e, "detail", None) or str(e) or type(e).__name__
        print(f"orchestratord replay: {detail}", file=sys.stderr)
        return 2
    if args.json:
        body = {"estimated": trace.estimated, "skipped": trace.skipped, "policies": results}
        print(json.dumps(body, indent=2))
    else:
        print(table(results))
        if trace.estimated or trace.skipped:
            print(
                f"({trace.estimated} tasks never started: service time estimated; "
                f"{trace.skipped} skipped: no measured time for their model)"
            )
    return 0
