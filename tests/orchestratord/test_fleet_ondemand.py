"""Models on demand in process (specs/orchestrator.md ORCH-360, ORCH-361; specs/fleet.md
FLT-064, FLT-065): a desired model's tasks queue with no worker, are told which spawn of the
plan they wait for, and still meet their deadline; pools report memory for placement."""

from __future__ import annotations

import json
from typing import Any

from starlette.testclient import TestClient

from tests.orchestratord.conftest import AppFactory

AT = {"authorization": "Bearer at"}
FLEET: dict[str, Any] = {
    "models": {
        "od": {"source": "catalog:od", "pools": ["p2", "p1"], "min_replicas": 0, "idle_ttl_s": 60}
    }
}


def events(c: TestClient, task_id: str) -> list[tuple[str, dict[str, Any]]]:
    """Every event of a task that has ended, by name and data."""
    out: list[tuple[str, dict[str, Any]]] = []
    with c.stream("GET", f"/v2/tasks/{task_id}/events") as r:
        name = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                out.append((name, json.loads(line[6:])))
    return out


def test_orch_360_orch_361_a_desired_model_queues_and_waits_for_its_spawn(
    orchd: AppFactory,
) -> None:
    """ORCH-360, ORCH-361: with no worker, a task for a model of the fleet is queued (one the
    fleet does not know is still 404); the plan asks for a replica at once and the queued
    task gets a `queued` event naming that spawn, once however often the plan is read; its
    deadline still ends it."""
    with orchd(admin_token="at", expect_models=()) as c:
        task = {"model": "od", "prompt": "hi", "max_tokens": 4, "deadline_ms": 1500}
        assert c.post("/v2/tasks", json=task).status_code == 404  # not desired yet
        assert c.put("/v2/fleet", json=FLEET, headers=AT).status_code == 200
        r = c.post("/v2/tasks", json=task)
        assert r.status_code == 202, r.text
        tid = r.json()["task_id"]
        assert c.post("/v2/tasks", json={**task, "model": "nope"}).status_code == 404
        for _ in range(3):
            plan = c.get("/v2/fleet/plan", headers=AT).json()
        assert [a["id"] for a in plan["actions"]] == ["ensure_model:od@p2", "spawn:od.p2.0"]
        assert plan["models"][0]["planned_replicas"] == 1
        got = events(c, tid)
        assert [n for n, _ in got] == ["queued", "queued", "error"]
        assert got[1][1]["waiting_for"]["action_id"] == "spawn:od.p2.0"
        assert got[1][1]["waiting_for"]["pool"] == "p2"
        assert got[1][1]["queue_position"] == 0
        assert got[2][1]["code"] == "DEADLINE_UNMET"


def test_flt_064_flt_065_pool_reports_and_the_replace_flag(orchd: AppFactory) -> None:
    """FLT-065: a pool's memory report is taken (204) and placement follows it: p2 (first in
    `pools`) is too small, so the spawn goes to p1 and says why; a bad report is 400 listing
    every bad field and changes nothing. FLT-064: replace_misplaced is true or false."""
    with orchd(admin_token="at", expect_models=()) as c:
        assert c.put("/v2/fleet", json=FLEET, headers=AT).status_code == 200
        assert c.post("/v2/tasks", json={"model": "od", "prompt": "x"}).status_code == 202
        model = {"od": {"size_bytes": 1 << 30, "kv_bytes_per_token": 1024}}
        small = {"ram_total_bytes": 2 << 30, "ram_free_bytes": 1 << 30, "models": model}
        big = {**small, "ram_free_bytes": 2 << 30}
        assert c.put("/v2/fleet/pools/p2", json=small, headers=AT).status_code == 204
        assert c.put("/v2/fleet/pools/p1", json=big, headers=AT).status_code == 204
        plan = c.get("/v2/fleet/plan", headers=AT).json()
        spawn = plan["actions"][-1]
        assert spawn["id"] == "spawn:od.p1.0" and "passed over p2: needs" in spawn["reason"]
        bad = {"ram_total_bytes": -1, "models": {"od": {"kv_bytes_per_token": "x"}}, "x": 1}
        r = c.put("/v2/fleet/pools/p2", json=bad, headers=AT)
        assert r.status_code == 400
        assert {e["field"] for e in r.json()["errors"]} == {
            "x", "ram_total_bytes", "ram_free_bytes", "models.od.size_bytes",
            "models.od.kv_bytes_per_token",
        }  # fmt: skip
        assert c.get("/v2/fleet/plan", headers=AT).json()["actions"][-1]["id"] == spawn["id"]
        null: dict[str, Any] = {"ram_total_bytes": 1, "ram_free_bytes": None, "models": {}}
        r = c.put("/v2/fleet/pools/p2", json=null, headers=AT)
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "ram_free_bytes"
        assert c.put("/v2/fleet/pools/p2", json=small).status_code == 401
        r = c.get("/v2/fleet/plan?replace_misplaced=yes", headers=AT)
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "replace_misplaced"
        assert c.get("/v2/fleet/plan?replace_misplaced=true", headers=AT).status_code == 200
