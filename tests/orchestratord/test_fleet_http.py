"""The fleet endpoints in process (specs/fleet.md FLT-003, FLT-004, FLT-020, FLT-026, FLT-030):
desired state, plan, leases, drain, and the fleet file at start and on SIGHUP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from orchestratord.__main__ import main as orchestratord_main
from orchestratord.app import _reload_on_sighup
from tests.orchestratord.conftest import AppFactory

CT = {"authorization": "Bearer ct"}
AT = {"authorization": "Bearer at"}
FLEET: dict[str, Any] = {
    "models": {"m": {"source": "catalog:m", "pools": ["p1", "p2"], "slots": 2}},
    "scaling": {"target_ttft_ms": 1000, "cooldown_s": 30},
}


def register(c: Any, wid: str, pool: str = "p1") -> None:
    reg = {"worker_id": wid, "url": "http://127.0.0.1:9", "model": "m", "pool": pool,
           "slots_total": 2}  # fmt: skip
    assert c.post("/v2/workers/register", json=reg, headers=CT).status_code == 201


def test_flt_004_put_and_get_the_desired_state(orchd: AppFactory) -> None:
    """FLT-004, FLT-002, FLT-007: PUT validates and installs, GET returns every field; a bad
    body is 400 with every problem and changes nothing; the routes need the admin credential."""
    with orchd(cluster_token="ct", admin_token="at", api_keys=("ck",)) as c:
        assert c.get("/v2/fleet", headers=AT).json() == {
            "models": {},
            "scaling": {"target_ttft_ms": 2000, "cooldown_s": 120},
        }
        r = c.put("/v2/fleet", json=FLEET, headers=AT)
        assert r.status_code == 200
        assert r.json()["models"]["m"] == {
            "source": "catalog:m", "pools": ["p1", "p2"], "backend": "cpu", "slots": 2,
            "ctx": 0, "min_replicas": 1, "max_replicas": 1, "warm_replicas": 0, "idle_ttl_s": 0,
        }  # fmt: skip
        bad = {"models": {"m": {"source": "nope", "pools": []}}, "scaling": {"cooldown_s": -1}}
        r = c.put("/v2/fleet", json=bad, headers=AT)
        assert r.status_code == 400 and r.json()["code"] == "INVALID_PARAMS"
        assert {e["field"] for e in r.json()["errors"]} == {
            "models.m.source", "models.m.pools", "scaling.cooldown_s"
        }  # fmt: skip
        assert c.get("/v2/fleet", headers=AT).json()["models"]["m"]["slots"] == 2
        assert c.get("/v2/fleet").status_code == 401
        assert c.get("/v2/fleet", headers={"authorization": "Bearer ck"}).status_code == 403
        assert c.get("/v2/fleet/plan", headers={"authorization": "Bearer ck"}).status_code == 403
        # The cluster token every pool host holds is not enough, for the drain either.
        assert c.get("/v2/fleet", headers=CT).status_code == 403
        assert c.post("/v2/workers/w/drain", headers=CT).status_code == 403


def test_flt_020_plan_and_leases_over_http(orchd: AppFactory) -> None:
    """FLT-020, FLT-026: the plan lists ensure_model and spawn for a missing replica; one
    holder leases, a second gets 409, an unknown action 404; a result ends the lease."""
    with orchd(cluster_token="ct", admin_token="at") as c:
        c.put("/v2/fleet", json=FLEET, headers=AT)
        plan = c.get("/v2/fleet/plan", headers=AT).json()
        assert plan["decided_by"] == "builtin"
        [model] = plan["models"]
        assert (model["model"], model["planned_replicas"]) == ("m", 1)
        assert model["load"]["replicas"] == 0
        assert [(a["kind"], a["pool"], a["worker_id"], a["lease"]) for a in plan["actions"]] == [
            ("ensure_model", "p1", None, None),
            ("spawn", "p1", "m.p1.0", None),
        ]
        url = "/v2/fleet/actions/spawn:m.p1.0"
        r = c.post(url + "/lease", json={"holder": "a", "ttl_s": 60}, headers=AT)
        assert r.status_code == 200 and r.json()["worker_id"] == "m.p1.0"
        r = c.post(url + "/lease", json={"holder": "b"}, headers=AT)
        assert r.status_code == 409 and r.json()["code"] == "CONFLICT"
        r = c.post("/v2/fleet/actions/spawn:nope/lease", json={"holder": "a"}, headers=AT)
        assert r.status_code == 404
        r = c.post(url + "/lease", json={"ttl_s": 0}, headers=AT)
        assert r.status_code == 400
        assert {e["field"] for e in r.json()["errors"]} == {"holder", "ttl_s"}
        r = c.post(url + "/result", json={"holder": "b", "ok": True}, headers=AT)
        assert r.status_code == 409
        r = c.post(url + "/result", json={"holder": "a", "ok": True, "detail": "up"}, headers=AT)
        assert r.status_code == 204
        # Spawned, not registered yet: it counts as starting, and is listed as done by `a`.
        plan = c.get("/v2/fleet/plan", headers=AT).json()
        assert plan["models"][0]["load"]["starting"] == 1
        assert [(a["id"], a["lease"]["holder"], a["lease"]["done"]) for a in plan["actions"]] == [
            ("spawn:m.p1.0", "a", True)
        ]
        register(c, "m.p1.0")
        plan = c.get("/v2/fleet/plan", headers=AT).json()
        assert plan["models"][0]["load"]["replicas"] == 1 and plan["actions"] == []


def test_flt_030_drain(orchd: AppFactory) -> None:
    """FLT-030: drain takes the worker out of scheduling at once; with nothing running it is
    drained; the plan then stops it; unknown workers are 404."""
    with orchd(cluster_token="ct", admin_token="at") as c:
        c.put("/v2/fleet", json={**FLEET, "models": {"m": {**FLEET["models"]["m"],
              "min_replicas": 0}}}, headers=AT)  # fmt: skip
        register(c, "m.p1.0")
        r = c.post("/v2/workers/m.p1.0/drain", headers=AT)
        assert r.status_code == 202 and r.json()["state"] == "drained"
        assert c.post("/v2/workers/m.p1.0/drain", headers=AT).status_code == 202
        [w] = c.get("/v2/workers", headers=CT).json()["workers"]
        assert w["state"] == "drained"
        assert c.get("/v2/meta/capabilities").json()["models"] == []
        plan = c.get("/v2/fleet/plan", headers=AT).json()
        assert [(a["kind"], a["worker_id"]) for a in plan["actions"]] == [("stop", "m.p1.0")]
        assert c.post("/v2/workers/ghost/drain", headers=AT).status_code == 404
        # A worker that registers again (a restart) stays drained.
        register(c, "m.p1.0")
        assert c.get("/v2/workers", headers=CT).json()["workers"][0]["state"] == "drained"


def test_flt_031_a_drain_outlives_a_restart(orchd: AppFactory) -> None:
    """FLT-031: orchestratord started again on the same database keeps a drained worker out
    of new work, after its heartbeats and its re-registration too."""
    with orchd(cluster_token="ct", admin_token="at") as c:
        register(c, "w1")
        assert c.post("/v2/workers/w1/drain", headers=AT).status_code == 202
        beat = {"state": "ready", "slots_total": 2, "slots_busy": 0}
        assert c.post("/v2/workers/w1/heartbeat", json=beat, headers=CT).status_code == 200
    with orchd(cluster_token="ct", admin_token="at") as c:
        assert c.post("/v2/workers/w1/heartbeat", json=beat, headers=CT).status_code == 200
        register(c, "w1")
        [w] = c.get("/v2/workers", headers=CT).json()["workers"]
        assert w["state"] == "drained"
        r = c.post("/v2/tasks", json={"model": "m", "prompt": "hi", "max_tokens": 2})
        task = c.get(f"/v2/tasks/{r.json()['task_id']}").json()
        assert task["status"] == "queued" and task["worker_id"] is None
    with orchd(cluster_token="ct", admin_token="at") as c:  # a restart while it was drained
        [w] = c.get("/v2/workers", headers=CT).json()["workers"]
        assert w["state"] in ("unverified", "drained")
        register(c, "w1")
        assert c.get("/v2/workers", headers=CT).json()["workers"][0]["state"] == "drained"


def test_orch_373_an_undrain_outlives_a_restart(orchd: AppFactory) -> None:
    """ORCH-373: undrain is the drain's undo: the worker is ready again, and orchestratord
    started again on the same database keeps it so (its stored row no longer says draining);
    an unknown worker is 404 and the cluster token is not enough."""
    beat = {"state": "ready", "slots_total": 2, "slots_busy": 0}
    with orchd(cluster_token="ct", admin_token="at") as c:
        register(c, "w1")
        assert c.post("/v2/workers/w1/drain", headers=AT).status_code == 202
        assert c.post("/v2/workers/w1/undrain", headers=CT).status_code == 403
        r = c.post("/v2/workers/w1/undrain", headers=AT)
        assert r.status_code == 202 and r.json()["state"] == "ready"
        assert c.post("/v2/workers/nope/undrain", headers=AT).status_code == 404
    with orchd(cluster_token="ct", admin_token="at") as c:
        assert c.post("/v2/workers/w1/heartbeat", json=beat, headers=CT).status_code == 200
        assert c.get("/v2/workers", headers=CT).json()["workers"][0]["state"] == "ready"


def test_flt_080_put_is_kept_and_the_file_is_only_the_seed(
    orchd: AppFactory, tmp_path: Path
) -> None:
    """FLT-080: a PUT outlives a restart that names the same --fleet file; the file seeds
    only an empty store."""
    path = tmp_path / "fleet.toml"
    path.write_text('[models.m]\nsource = "catalog:m"\npools = ["p1"]\nslots = 3\n')
    with orchd(cluster_token="ct", admin_token="at", fleet=path) as c:
        assert c.get("/v2/fleet", headers=AT).json()["models"]["m"]["slots"] == 3
        assert c.put("/v2/fleet", json=FLEET, headers=AT).status_code == 200
    with orchd(cluster_token="ct", admin_token="at", fleet=path) as c:
        assert c.get("/v2/fleet", headers=AT).json()["models"]["m"]["pools"] == ["p1", "p2"]


def test_flt_003_fleet_file_at_start_and_on_sighup(orchd: AppFactory, tmp_path: Path) -> None:
    """FLT-003: --fleet is read at start."""
    path = tmp_path / "fleet.toml"
    path.write_text('[models.m]\nsource = "catalog:m"\npools = ["p1"]\nslots = 3\n')
    with orchd(cluster_token="ct", admin_token="at", fleet=path) as c:
        assert c.get("/v2/fleet", headers=AT).json()["models"]["m"]["slots"] == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [("[models.m]\nsource = 1\n", "models.m.source"), ("[models\n", "does not parse")],
)
def test_flt_003_invalid_fleet_file_fails_the_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    """FLT-003: an invalid --fleet file is one line on stderr and exit status 2."""
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    args = ["--fleet", str(path), "--state-dir", str(tmp_path / "s")]
    assert orchestratord_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("orchestratord: ") and message in err and err.count("\n") == 1


def test_flt_003_sighup_reload(tmp_path: Path) -> None:
    """FLT-003, FLT-080: the SIGHUP handler re-reads the fleet file and stores it; an invalid
    one keeps the state."""
    from orchestratord.fleet.control import FleetControl
    from orchestratord.fleet.desired import load_fleet_file
    from orchestratord.fleet.plan_hook import PlanHook
    from orchestratord.policy import PolicyEngine, PolicyHolder
    from orchestratord.store.db import Store

    store = Store(f"sqlite:///{tmp_path / 'o.db'}").open()

    path = tmp_path / "fleet.toml"
    path.write_text('[models.m]\nsource = "catalog:m"\npools = ["p1"]\nslots = 3\n')
    control = FleetControl(load_fleet_file(path), PlanHook.from_source(""), path=path)
    holder = PolicyHolder(PolicyEngine.from_file(None))
    path.write_text('[models.m]\nsource = "catalog:m"\npools = ["p1"]\nslots = 4\n')
    _reload_on_sighup(holder, control, store)
    assert control.spec.models[0].slots == 4
    stored = store.load_fleet()
    assert stored is not None and stored["models"]["m"]["slots"] == 4
    path.write_text('[models.m]\nsource = "catalog:m"\npools = []\n')
    _reload_on_sighup(holder, control, store)
    assert control.spec.models[0].slots == 4
    assert store.load_fleet() == stored
    store.close()
