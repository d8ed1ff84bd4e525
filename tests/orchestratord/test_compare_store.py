"""Compare runs in the real store, SQLite and PostgreSQL (ORCH-212, ORCH-213, ORCH-340)."""

from __future__ import annotations

from orchestratord.domain.compare import CompareRun
from orchestratord.store.db import Store
from tests.orchestratord.test_db import V1_SCHEMA
from tests.stores import run_sql


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
    store_url: str,
) -> None:
    store = Store(store_url).open()
    r1, r2, r3 = _run("r1", 1, "acme"), _run("r2", 2, "other"), _run("r3", 3, "acme")
    for r in (r1, r2, r3):
        store.save_compare_run(r.to_json())
    r1.finish(9, [{"id": "r1-1", "status": "succeeded"}, {"id": "r1-2", "status": "failed"}])
    store.save_compare_run(r1.to_json())  # the finished run replaces the running one
    store.close()

    store = Store(store_url).open()
    got = store.get_compare_run("r1")
    assert got is not None and got["status"] == "done"
    assert [x["status"] for x in got["results"]] == ["succeeded", "failed"]
    assert store.get_compare_run("nope") is None
    assert [r["id"] for r in store.list_compare_runs(50, "acme", everyone=False)] == ["r3", "r1"]
    assert [r["id"] for r in store.list_compare_runs(50, None, everyone=True)] == ["r3", "r2", "r1"]
    assert [r["id"] for r in store.list_compare_runs(1, None, everyone=True)] == ["r3"]
    assert store.list_compare_runs(50, None, everyone=False) == []
    store.close()


def test_orch_212_an_older_database_gains_the_compare_table(store_url: str) -> None:
    """ORCH-212, ORCH-341: a table added after a release is created in an older database."""
    run_sql(store_url, V1_SCHEMA)
    store = Store(store_url).open()
    store.save_compare_run(_run("r1", 1, None).to_json())
    assert store.get_compare_run("r1") is not None
    store.close()
