"""Compare runs, pure: targets, figures, the exported record (ORCH-210, ORCH-212)."""

from __future__ import annotations

import pytest

from orchestratord.domain.compare import CompareRun, Target, figures, job_of, parse_targets
from shared.problem import InvalidParams


def test_orch_210_targets_are_workers_or_pools_two_to_eight_distinct() -> None:
    assert parse_targets(["worker:a", "pool:gpu-1", "b"]) == (
        Target("worker", "a"),
        Target("pool", "gpu-1"),
        Target("worker", "b"),
    )
    for bad in (["a"], "a,b", ["a", "a"], ["a", "worker:"], [f"w{i}" for i in range(9)], [1, 2]):
        with pytest.raises(InvalidParams) as e:
            parse_targets(bad)
        assert e.value.errors and e.value.errors[0]["field"] == "targets"


def test_orch_212_figures_from_a_record() -> None:
    rec = {
        "id": "t1",
        "status": "succeeded",
        "worker_id": "w1",
        "created_ms": 1_000,
        "finished_ms": 1_600,
        "ttft_ms": 100.0,
        "tokens_out": 51,
        "error_code": None,
    }
    f = figures("worker:w1", rec)
    assert f["total_ms"] == 600 and f["ttft_ms"] == 100.0
    assert f["tokens_per_s"] == 100.0  # 50 tokens after the first in 500 ms
    failed = figures("pool:p", {"id": "t2", "status": "failed", "error_code": "WORKER_RESET"})
    assert failed["tokens_per_s"] is None and failed["total_ms"] is None
    assert failed["error_code"] == "WORKER_RESET" and failed["tokens_out"] == 0


def test_orch_212_run_record_exports_job_runs_and_results() -> None:
    body = {"model": "m", "prompt": "hi", "max_tokens": 8, "targets": ["a", "b"], "label": "x"}
    run = CompareRun("r1", 5, "m", job_of(body), ["worker:a", "worker:b"], ["t1", "t2"])
    assert run.to_json()["status"] == "running" and run.to_json()["results"] == []
    run.finish(9, [{"id": "t1", "status": "succeeded"}, {"id": "t2", "status": "cancelled"}])
    out = run.to_json()
    assert out["job"] == {"model": "m", "prompt": "hi", "max_tokens": 8}
    assert out["runs"] == [
        {"target": "worker:a", "task_id": "t1"},
        {"target": "worker:b", "task_id": "t2"},
    ]
    assert [r["status"] for r in out["results"]] == ["succeeded", "cancelled"]
    assert (out["status"], out["finished_ms"]) == ("done", 9)
