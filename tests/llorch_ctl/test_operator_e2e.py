"""The operator's commands against a real orchestratord on loopback (and a real worker on the
tiny model): drain/undrain, the running policy, the stored fleet, which token reads what, and
refusals that say how to fix them."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestratord.fleet.desired import load_fleet_file
from orchestratord.policy import builtin_source
from tests.llorch_ctl.conftest import LLORCH
from tests.support import Proc, free_port, spawn, spawn_worker

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "team-a:client-key"
CLUSTER = "cluster-token"
ADMIN = "admin-token"
WORKER = "w-ops"
MODEL = "llorch-tiny"
GOOD_POLICY = ROOT / "examples/policies/tenant_share_cap.star"


def orchd_args(state: Path, port: int, *extra: str) -> list[str]:
    return [
        "orchestratord",
        "--port",
        str(port),
        "--state-dir",
        str(state),
        "--api-key",
        API_KEY,
        "--cluster-token",
        CLUSTER,
        "--admin-token",
        ADMIN,
        *extra,
    ]


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[tuple[Proc, Path]]:
    tmp = tmp_path_factory.mktemp("ops")
    port = free_port()
    with spawn(orchd_args(tmp / "state", port), port, tmp / "orchd.log", "/health") as orchd:
        extra = ["--orchestrator-url", orchd.url, "--worker-id", WORKER, "--pool", "ops"]
        with spawn_worker(tiny_model, tmp, token=CLUSTER, extra=extra) as worker:
            wait_for(lambda: _state(orchd.url) == "ready", worker)
            yield orchd, tmp


def _state(url: str) -> str | None:
    r = httpx.get(url + "/v2/workers", headers={"Authorization": f"Bearer {ADMIN}"})
    listed = {w["id"]: w["state"] for w in r.json()["workers"]} if r.status_code == 200 else {}
    return listed.get(WORKER)


def wait_for(condition: Any, proc: Proc | None = None, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError("never happened" + (f":\n{proc.log_text()[-2000:]}" if proc else ""))


def llorch(
    *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    # Only what each test gives: no credential from the caller's environment.
    base = {k: v for k, v in os.environ.items() if not k.startswith("LLORCH_")}
    return subprocess.run(
        [*LLORCH, "--config", os.devnull, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )


def test_ctl_090_drain_and_undrain_a_worker_queued_tasks_go_on(fleet: tuple[Proc, Path]) -> None:
    """CTL-090, ORCH-373: `llorch workers drain` keeps new tasks off the worker (a task
    queues), `llorch workers undrain` gives it tasks again and the queued one finishes; both
    take the admin token from LLORCH_ADMIN_TOKEN."""
    orchd, _ = fleet
    env = {"LLORCH_ORCHESTRATOR_URL": orchd.url, "LLORCH_ADMIN_TOKEN": ADMIN}
    drained = llorch("workers", "drain", WORKER, env=env)
    assert drained.returncode == 0, drained.stderr
    assert drained.stderr.strip() == f"worker {WORKER}: drained"
    assert _state(orchd.url) == "drained"
    client = {"Authorization": f"Bearer {API_KEY.split(':')[1]}"}
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 3}
    r = httpx.post(orchd.url + "/v2/tasks", json=body, headers=client)
    assert r.status_code in (200, 202), r.text
    task_id = r.json()["task_id"]

    def status() -> str:
        return str(httpx.get(f"{orchd.url}/v2/tasks/{task_id}", headers=client).json()["status"])

    assert status() == "queued"
    undrained = llorch("workers", "undrain", WORKER, env=env)
    assert undrained.returncode == 0, undrained.stderr
    assert undrained.stderr.strip().startswith(f"worker {WORKER}: ")
    assert _state(orchd.url) in ("ready", "busy")
    wait_for(lambda: status() == "succeeded")
    again = llorch("workers", "undrain", WORKER, env=env)  # idempotent
    assert again.returncode == 0, again.stderr
    unknown = llorch("workers", "drain", "no-such-worker", env=env)
    assert unknown.returncode == 211 and "NOT_FOUND" in unknown.stderr


def test_ctl_091_the_admin_token_reads_the_registry_and_any_task(fleet: tuple[Proc, Path]) -> None:
    """CTL-091: `llorch workers list` and `tasks status|cancel` take the admin token (flag or
    LLORCH_ADMIN_TOKEN) with no cluster token or client key at hand."""
    orchd, _ = fleet
    url = ["--orchestrator-url", orchd.url]
    listed = llorch("workers", "list", "--json", *url, "--admin-token", ADMIN)
    assert listed.returncode == 0, listed.stderr
    assert [w["id"] for w in json.loads(listed.stdout)] == [WORKER]
    bare = llorch("workers", "--json", *url, env={"LLORCH_ADMIN_TOKEN": ADMIN})
    assert bare.returncode == 0, bare.stderr
    assert [w["id"] for w in json.loads(bare.stdout)] == [WORKER]

    client = {"Authorization": f"Bearer {API_KEY.split(':')[1]}"}
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 2}
    task_id = httpx.post(orchd.url + "/v2/tasks", json=body, headers=client).json()["task_id"]
    status = llorch("tasks", "status", task_id, *url, "--admin-token", ADMIN)
    assert status.returncode == 0, status.stderr
    record = json.loads(status.stdout)
    assert record["id"] == task_id and record["tenant"] == "team-a"
    cancel = llorch("tasks", "cancel", task_id, *url, env={"LLORCH_ADMIN_TOKEN": ADMIN})
    assert cancel.returncode == 0, cancel.stderr
    assert task_id in cancel.stderr


def test_orch_370_every_refusal_names_the_flag_and_variable(fleet: tuple[Proc, Path]) -> None:
    """ORCH-370, CTL-090: 401/403 details name the llorch flag and LLORCH_* variable, server
    side (problem detail, worker included) and CLI side (its one line)."""
    orchd, _ = fleet
    wrong = {"Authorization": "Bearer wrong"}
    cluster = {"Authorization": f"Bearer {CLUSTER}"}
    cases = [
        ("GET", "/v2/fleet", {}, 401, "--admin-token or LLORCH_ADMIN_TOKEN"),
        ("GET", "/v2/admin/policy", cluster, 403, "--admin-token or LLORCH_ADMIN_TOKEN"),
        ("GET", "/v2/workers", wrong, 401, "--cluster-token or LLORCH_CLUSTER_TOKEN"),
        ("GET", "/v2/tasks", {}, 401, "--api-key or LLORCH_API_KEY"),
        ("GET", "/v2/tasks", wrong, 401, "--api-key or LLORCH_API_KEY"),
    ]
    for method, path, headers, status, fix in cases:
        r = httpx.request(method, orchd.url + path, headers=headers)
        assert r.status_code == status, (path, r.text)
        assert fix in r.json()["detail"], (path, r.json())
    workers = httpx.get(orchd.url + "/v2/workers", headers={"Authorization": f"Bearer {ADMIN}"})
    worker_url = workers.json()["workers"][0]["url"]
    r = httpx.post(worker_url + "/execute", json={"prompt": "x"})
    assert r.status_code == 401
    assert "--cluster-token or LLORCH_CLUSTER_TOKEN" in r.json()["detail"]

    url = ["--orchestrator-url", orchd.url]
    for args, fix in [
        (["workers", "drain", WORKER], "--admin-token or LLORCH_ADMIN_TOKEN"),
        (["policy", "get"], "--admin-token or LLORCH_ADMIN_TOKEN"),
        (["tasks", "list"], "--api-key or LLORCH_API_KEY"),
        (["workers", "list", "--cluster-token", "wrong"], "LLORCH_CLUSTER_TOKEN"),
    ]:
        out = llorch(*args, *url)
        assert out.returncode == 211, (args, out.stderr)
        [line] = out.stderr.splitlines()
        assert line.startswith("llorch: ") and "this command takes" in line, (args, line)
        assert fix in line.split("this command takes")[1], (args, line)


def test_ctl_093_policy_get_check_set_replay(fleet: tuple[Proc, Path], tmp_path: Path) -> None:
    """CTL-093, ORCH-371, ORCH-372: `llorch policy get` prints the running source; `check`
    refuses a broken file with its problem and accepts a good one, installing neither; `set`
    installs; `replay` runs orchestratord's replay on the daemon's database."""
    orchd, tmp = fleet
    env = {"LLORCH_ORCHESTRATOR_URL": orchd.url, "LLORCH_ADMIN_TOKEN": ADMIN}
    got = llorch("policy", "get", env=env)
    assert got.returncode == 0, got.stderr
    assert got.stdout == builtin_source()
    record = json.loads(llorch("policy", "get", "--json", env=env).stdout)
    assert record["name"] == "default.star" and record["path"] is None
    assert len(record["sha256"]) == 64 and record["loaded_ms"] > 0

    broken = tmp_path / "broken.star"
    broken.write_text("def admit(task, cluster):\n    return {'accept': 'yes'\n")
    bad = llorch("policy", "check", str(broken), env=env)
    assert bad.returncode == 211 and "INVALID_PARAMS" in bad.stderr, bad.stderr
    ok = llorch("policy", "check", str(GOOD_POLICY), env=env)
    assert ok.returncode == 0, ok.stderr
    assert ok.stderr.startswith(f"ok: {GOOD_POLICY.name}")
    assert json.loads(llorch("policy", "get", "--json", env=env).stdout) == record  # unchanged

    installed = llorch("policy", "set", str(GOOD_POLICY), env=env)
    assert installed.returncode == 0, installed.stderr
    now = json.loads(llorch("policy", "get", "--json", env=env).stdout)
    assert now["source"] == GOOD_POLICY.read_text() and now["name"] == GOOD_POLICY.name
    assert now["loaded_ms"] >= record["loaded_ms"] and now["sha256"] != record["sha256"]

    db = str(tmp / "state" / "orchestratord.sqlite3")
    replay = llorch("policy", "replay", str(GOOD_POLICY), "--db", db, "--json", env=env)
    assert replay.returncode == 0, replay.stderr
    figures = json.loads(replay.stdout)
    assert figures, replay.stdout
    running = llorch(
        "policy", "replay", str(GOOD_POLICY), "--db", db, "--against-running", "--json", env=env
    )
    assert running.returncode == 0, running.stderr
    llorch("policy", "set", str(ROOT / "orchestratord/policies/default.star"), env=env)


def test_flt_080_put_fleet_outlives_a_restart_and_the_example_is_the_seed(tmp_path: Path) -> None:
    """FLT-080: `--fleet examples/fleet.toml` seeds the first start; `llorch fleet put` is
    kept in the store, so a restart with the same `--fleet` keeps the PUT one."""
    example = ROOT / "examples/fleet.toml"
    seed = load_fleet_file(example).to_json()
    mine = tmp_path / "mine.toml"
    mine.write_text('[models.other]\nsource = "catalog:other"\npools = ["p9"]\nslots = 2\n')
    state = tmp_path / "state"
    env: dict[str, str] = {}
    for run in (1, 2):
        port = free_port()
        args = orchd_args(state, port, "--fleet", str(example))
        with spawn(args, port, tmp_path / f"orchd-{run}.log", "/health") as orchd:
            env = {"LLORCH_ORCHESTRATOR_URL": orchd.url, "LLORCH_ADMIN_TOKEN": ADMIN}
            got = llorch("fleet", "get", env=env)
            assert got.returncode == 0, got.stderr
            if run == 1:
                assert json.loads(got.stdout) == seed
                put = llorch("fleet", "put", str(mine), env=env)
                assert put.returncode == 0, put.stderr
            else:
                assert list(json.loads(got.stdout)["models"]) == ["other"]
