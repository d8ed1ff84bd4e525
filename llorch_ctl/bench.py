"""`llorch bench`: one job run at once on several workers or pools, as an orchestratord compare
run (saved with the console's runs), printed as a table.

The figures are orchestratord's (one clock for every target): TTFT from submission to the
first token, tok/s after the first token, total from submission to the end.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from llorch_ctl.errors import ApiFailed, ConfigError
from llorch_ctl.orch import OrchSettings, client

WAIT_SLICE_MS = 10_000
COLUMNS = ("TARGET", "WORKER", "STATUS", "TOKENS", "TTFT_MS", "TOK/S", "TOTAL_MS")


def targets(workers: Sequence[str], pools: Sequence[str]) -> list[str]:
    """`--workers a,b` and `--pools p,q` as the API's targets; two or more in all."""
    out = [f"worker:{w}" for w in _split(workers)] + [f"pool:{p}" for p in _split(pools)]
    if len(out) < 2:
        raise ConfigError("bench needs two or more targets: --workers a,b and/or --pools p,q")
    return out


def _split(values: Sequence[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def run_bench(
    s: OrchSettings,
    model: str,
    chosen: Sequence[str],
    prompt: str,
    params: Mapping[str, Any],
    *,
    label: str | None = None,
    timeout_s: float = 600.0,
) -> dict[str, Any]:
    """Start the compare run and wait until orchestratord saved its figures."""
    deadline = time.monotonic() + timeout_s
    with client(s) as c:
        run = c.compare(model, chosen, prompt=prompt, label=label, **params)
        while run.get("status") != "done":
            if time.monotonic() > deadline:
                raise ApiFailed(f"compare run {run.get('id')} did not finish in {timeout_s:.0f} s")
            run = c.compare_run(str(run["id"]), wait_ms=WAIT_SLICE_MS)
    return run


def _num(value: object, digits: int) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.{digits}f}"
    return "-"


def render(run: Mapping[str, Any]) -> str:
    """The run's results as one table, then its id (for `GET /v2/compare/{id}`)."""
    rows = [COLUMNS]
    for r in run.get("results", []):
        rows.append(
            (
                str(r.get("target")),
                str(r.get("worker_id") or "-"),
                str(r.get("status")) + (f" {r['error_code']}" if r.get("error_code") else ""),
                str(r.get("tokens_out", 0)),
                _num(r.get("ttft_ms"), 1),
                _num(r.get("tokens_per_s"), 1),
                _num(r.get("total_ms"), 0),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(widths[i]) for i, c in enumerate(row)).rstrip() for row in rows]
    return "\n".join([*lines, f"run {run.get('id')} ({run.get('model')})"]) + "\n"


def failed(run: Mapping[str, Any]) -> bool:
    return any(r.get("status") != "succeeded" for r in run.get("results", []))
