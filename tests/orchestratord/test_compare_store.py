"""Compare runs in the real SQLite store (ORCH-212, ORCH-213)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from orchestratord.domain.compare import CompareRun
from orchestratord.store.db import Store
from tests.orchestratord.test_db import V1_SCHEMA


def _run(run_id: str, created: int, tenant: str | None) -> CompareRun:
    return CompareRun(
        run_id,
        created,
        "m",
        {"model": "m", "prompt": "hi"},
        ["worker:a", "worker:b"],
        [f"{run_id}-1", f"{run_id}-2"],
        tenant=tenant,
    )


def test_orch_212_compare_runs_are_kept_across_restarts_and_listed_per_tenant(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    store = Store(url).open()
    r1, r2, r3 = _run("r1", 1, "acme"), _run("r2", 2, "other"), _run("r3", 3, "acme")
    for r in (r1, r2, r3):
        store.save_compare_run(r.to_json())
    r1.finish(9, [{"id": "r1-1", "status": "succeeded"}, {"id": "r1-2", "status": "failed"}])
    store.save_compare_run(r1.to_json())  # the finished run replaces the running one
    store.close()

    store = Store(url).open()
    got = store.get_compare_run("r1")
    assert got is not None and got["status"] == "done"
    assert [x["status"] for x in got["results"]] == ["succeeded", "failed"]
    assert store.get_compare_run("nope") is None
    assert [r["id"] for r in store.list_compare_runs(50, "acme", everyone=False)] == ["r3", "r1"]
    assert [r["id"] for r in store.list_compare_runs(50, None, everyone=True)] == ["r3", "r2", "r1"]
    assert [r["id"] for r in store.list_compare_runs(1, None, everyone=True)] == ["r3"]
    assert store.list_compare_runs(50, None, everyone=False) == []
    store.close()


def test_orch_212_an_older_database_gains_the_compare_table(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:
        c.executescript(V1_SCHEMA)
    store = Store(f"sqlite:///{path}").open()
    store.save_compare_run(_run("r1", 1, None).to_json())
    assert store.get_compare_run("r1") is not None
    store.close()
