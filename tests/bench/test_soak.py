"""The soak in `make test`: bench/soak.py bounded to about two minutes, its checks asserted.

Real processes on loopback (one orchestratord, two llorch-workerd on the tiny model): 3,000
tasks (submitting stops after 100 s on a slow machine) from 24 clients with dropped streams
before and after the first token, cancels of queued and running tasks, a worker SIGKILLed
and started again every 300 tasks, and one orchestratord restart on the same database.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def run_soak(model: Path, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--model", str(model), *args],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=ROOT,
    )
    if not out.stdout.strip():
        pytest.fail(f"bench/soak.py printed no report (rc {out.returncode}):\n{out.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(out.stdout)
    assert out.returncode == (0 if report["pass"] else 1), out.stderr[-3000:]
    return report


@pytest.mark.timeout(480)
def test_soak_invariants_hold_under_drops_cancels_kills_and_a_restart(tiny_model: Path) -> None:
    """ORCH-110, ORCH-111, ORCH-112 (the soak's invariants), through ORCH-005, ORCH-015,
    ORCH-023, ORCH-024, ORCH-042, ORCH-052, ORCH-064: every accepted task ends in a terminal
    state with a reason that agrees with its stream; no worker slot stays busy and
    orchestratord counts none busy that its worker reports idle; RSS stays within 10% from
    600 tasks to the end; new tasks still run afterwards."""
    report = run_soak(
        tiny_model,
        "--tasks",
        "3000",
        "--time-limit",
        "100",
        "--kill-every",
        "300",
        "--rss-baseline-at",
        "600",
    )
    figures = report["figures"]
    # The disruptions really happened, or the checks below prove nothing.
    assert figures["orchestratord_restarts"] == 1, figures
    assert figures["worker_kills"] >= 1, figures
    assert figures["accepted"] >= 600, figures
    failed = {name: c for name, c in report["checks"].items() if not c["pass"]}
    assert not failed, json.dumps({"failed": failed, "figures": figures}, indent=2)
