"""`orchestratord replay --db PATH --policy CANDIDATE.star [--baseline OTHER.star] [--json]`.

Replays the recorded tasks of an orchestratord database under the baseline policy (the
built-in one unless --baseline) and the candidate, and prints the figures side by side as a
table, or as JSON with --json. A subcommand of orchestratord's command line
(orchestratord/cli.py), so failures are one line on stderr and exit status 2, as the daemon's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer

from orchestratord.domain.queue import DISCIPLINES, Discipline
from orchestratord.policy import PolicyEngine
from orchestratord.replay.report import PolicyFigures, figures, table
from orchestratord.replay.sim import simulate
from orchestratord.replay.trace import Trace, load_trace
from orchestratord.settings import Settings, SettingsError

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
    discipline: Discipline = "wfq",
    weights: dict[str, float] | None = None,
    prefill_tokens_per_s: float = 0.0,
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
            discipline=discipline,
            weights=weights,
            prefill_tokens_per_s=prefill_tokens_per_s,
        )
        results.append(figures(name, trace, out))
    return results


FULL_POLICIES = ("reject", "drop-lru")


def command(
    db: Annotated[str, typer.Option("--db", help="orchestratord database file (or a URL)")],
    policy: Annotated[Path, typer.Option("--policy", help="Candidate policy file")],
    baseline: Annotated[
        Path | None,
        typer.Option("--baseline", help="Baseline policy file [default: the built-in policy]"),
    ] = None,
    queue_capacity: Annotated[
        int, typer.Option("--queue-capacity", help="Tasks that may wait in the queue")
    ] = 1024,
    queue_full_policy: Annotated[
        str, typer.Option("--queue-full-policy", help="When the queue is full: reject or drop-lru")
    ] = "reject",
    worker_prefetch: Annotated[
        int, typer.Option("--worker-prefetch", help="Jobs sent to a worker beyond its free slots")
    ] = 0,
    queue_discipline: Annotated[
        str,
        typer.Option("--queue-discipline", help="Order across tenants: wfq (fair share) or fifo"),
    ] = "wfq",
    tenant_weight: Annotated[
        list[str] | None,
        typer.Option("--tenant-weight", help="TENANT=W: a tenant's fair-share weight; repeatable"),
    ] = None,
    prefill_tokens_per_s: Annotated[
        float,
        typer.Option(
            "--prefill-tokens-per-s",
            help="Prompt tokens a worker decodes per second: shortens a task's service time by "
            "what its simulated cache saves [default: 0, times as recorded]",
        ),
    ] = 0.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")] = False,
    debug: Annotated[  # read by orchestratord.__main__, which reports failures
        bool, typer.Option("--debug", help="Show the traceback when it fails.")
    ] = False,
) -> int:
    """Replay recorded tasks under a candidate policy and a baseline.

    The tasks of an orchestratord database go through the real admission, queue and
    scheduling code on a virtual clock; the figures of both policies print side by side
    (specs/fleet.md FLT-050..FLT-055). The database is only read.
    """
    if queue_full_policy not in FULL_POLICIES:
        raise typer.BadParameter(
            f"must be one of {', '.join(FULL_POLICIES)}", param_hint="'--queue-full-policy'"
        )
    if queue_discipline not in DISCIPLINES:
        raise typer.BadParameter(
            f"must be one of {', '.join(DISCIPLINES)}", param_hint="'--queue-discipline'"
        )
    try:  # the daemon's own reading of --tenant-weight, and its one-line error
        weights = Settings(tenant_weights=tuple(tenant_weight or ())).tenant_weight_map
    except SettingsError as e:
        raise typer.BadParameter(str(e), param_hint="'--tenant-weight'") from None
    # Failures from here on (no database, a policy that does not parse) are the caller's to
    # report as one line (orchestratord.__main__), as for the daemon's own start-up.
    trace = load_trace(db)
    results = run(
        trace,
        [("baseline" if baseline else "built-in", baseline), ("candidate", policy)],
        queue_capacity=queue_capacity,
        full_policy=queue_full_policy,
        prefetch=worker_prefetch,
        discipline="fifo" if queue_discipline == "fifo" else "wfq",
        weights=weights,
        prefill_tokens_per_s=prefill_tokens_per_s,
    )
    if as_json:
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
