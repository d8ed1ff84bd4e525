"""Workers spawned with --orchestrator-url register with a real orchestratord; stop deregisters."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pool_ctl import procs
from pool_ctl.models import import_file
from pool_ctl.settings import Settings
from tests.pool_ctl.helpers import Result, pool_env, run_pool
from tests.support import Proc, free_port, spawn

pytestmark = pytest.mark.e2e
TOKEN = "cluster-secret"


def spawn_worker(env: dict[str, str], orchestrator_url: str, token: str) -> Result:
    """`worker spawn cpu --model tiny --json`, registering with orchestratord at the URL."""
    args = ["worker", "spawn", "cpu", "--model", "tiny", "--json"]
    return run_pool([*args, "--orchestrator-url", orchestrator_url, "--cluster-token", token], env)


@pytest.fixture
def orchestrator(tmp_path: Path) -> Iterator[Proc]:
    port = free_port()
    args = [
        "orchestratord",
        "--port",
        str(port),
        "--state-dir",
        str(tmp_path / "orchd"),
        "--cluster-token",
        TOKEN,
    ]
    with spawn(args, port, tmp_path / "orchd.log", "/health") as p:
        yield p


@pytest.fixture
def env(home: Path, tiny_model: Path) -> Iterator[dict[str, str]]:
    import_file(Settings.build(home), tiny_model, model_id="tiny")
    e = pool_env(home)
    yield e
    run_pool(["worker", "stop", "--all", "--grace", "2"], e)


def registered(orch: Proc) -> dict[str, str]:
    r = httpx.get(orch.url + "/v2/workers", headers={"Authorization": f"Bearer {TOKEN}"})
    r.raise_for_status()
    workers: list[dict[str, Any]] = r.json()["workers"]
    return {w["id"]: str(w["url"]) for w in workers}


def wait_for(predicate: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_stop_deregisters_from_orchestratord(env: dict[str, str], orchestrator: Proc) -> None:
    """POOL-041: the token is in no printed record (has_token instead); POOL-052: it reaches the
    worker through its environment, not its command line; POOL-060: stop of a dead worker
    deregisters it with the token as bearer."""
    r = spawn_worker(env, orchestrator.url, TOKEN)
    assert r.code == 0, r.err
    record = r.json()
    wid = record["worker_id"]
    assert record["orchestrator"] == orchestrator.url and record["has_token"] is True
    assert TOKEN not in r.out and "token" not in record
    # The token reaches the worker through its environment, never its command line.
    assert TOKEN not in " ".join(procs.cmdline(record["pid"]) or [])
    assert TOKEN not in run_pool(["worker", "list", "--json"], env).out
    # The worker registers itself once it listens.
    assert wait_for(lambda: wid in registered(orchestrator)), orchestrator.log_text()[-2000:]
    assert registered(orchestrator)[wid] == record["url"]
    # A killed worker cannot deregister itself: only `worker stop` can tell orchestratord.
    os.kill(record["pid"], signal.SIGKILL)
    assert wait_for(
        lambda: procs.identify(record["pid"], record["start_time"], record["cmdline"]) == "gone"
    )
    stopped = run_pool(["worker", "stop", wid, "--json"], env)
    assert stopped.code == 0, stopped.err
    assert stopped.json()["stopped"] == [
        {"worker_id": wid, "process": "gone", "orchestrator": "deregistered"}
    ]
    assert wid not in registered(orchestrator)


def test_stop_tolerates_an_unreachable_orchestrator(env: dict[str, str]) -> None:
    """POOL-060: an unreachable orchestrator does not fail the stop; it is reported."""
    gone = f"http://127.0.0.1:{free_port()}"
    r = spawn_worker(env, gone, TOKEN)
    assert r.code == 0, r.err
    stopped = run_pool(["worker", "stop", r.json()["worker_id"], "--json"], env)
    assert stopped.code == 0, stopped.err
    assert stopped.json()["stopped"][0]["orchestrator"] == "orchestrator unreachable (ConnectError)"
    assert run_pool(["worker", "list", "--json"], env).json() == {"workers": []}


def test_a_stopped_worker_leaves_the_registry(env: dict[str, str], orchestrator: Proc) -> None:
    """POOL-052: --advertise-url reaches the worker; POOL-060: a worker that terminated on
    SIGTERM deregistered itself."""
    port = free_port()
    advertised = f"http://pool-host.example:{port}"
    args = [
        "worker",
        "spawn",
        "cpu",
        "--model",
        "tiny",
        "--json",
        "--port",
        str(port),
        "--orchestrator-url",
        orchestrator.url,
        "--cluster-token",
        TOKEN,
        "--advertise-url",
        advertised,
    ]
    r = run_pool(args, env)
    assert r.code == 0, r.err
    wid = r.json()["worker_id"]
    assert wait_for(lambda: wid in registered(orchestrator)), orchestrator.log_text()[-2000:]
    assert registered(orchestrator)[wid] == advertised
    stopped = run_pool(["worker", "stop", wid, "--json"], env)
    assert stopped.code == 0, stopped.err
    outcome = stopped.json()["stopped"][0]
    assert outcome["process"] == "terminated"
    # The worker deregisters itself on the way out; ours then finds nothing left, or removes it.
    assert outcome["orchestrator"] in ("deregistered", "deregistered by the worker")
    assert wid not in registered(orchestrator)


def test_stop_reports_an_orchestrator_that_answers_an_error(
    env: dict[str, str], orchestrator: Proc
) -> None:
    """POOL-060: orchestratord answering the DELETE with an error status (here 401: the worker
    was given another token) does not fail the stop; it is reported, and the record goes."""
    r = spawn_worker(env, orchestrator.url, "not-the-cluster-token")
    assert r.code == 0, r.err
    wid = r.json()["worker_id"]
    stopped = run_pool(["worker", "stop", wid, "--json"], env)
    assert stopped.code == 0, stopped.err
    assert stopped.json()["stopped"] == [
        {
            "worker_id": wid,
            "process": "terminated",
            "orchestrator": "orchestrator answered HTTP 401",
        }
    ]
    assert run_pool(["worker", "list", "--json"], env).json() == {"workers": []}


def test_cleanup_deregisters_the_dead_workers_it_removes(
    env: dict[str, str], orchestrator: Proc
) -> None:
    """POOL-072: cleanup takes a dead worker out of orchestratord's registry with its record;
    POOL-070: `remove-gone`."""
    r = spawn_worker(env, orchestrator.url, TOKEN)
    assert r.code == 0, r.err
    record = r.json()
    wid = record["worker_id"]
    assert wait_for(lambda: wid in registered(orchestrator)), orchestrator.log_text()[-2000:]
    os.kill(record["pid"], signal.SIGKILL)  # dies without deregistering itself
    assert wait_for(
        lambda: procs.identify(record["pid"], record["start_time"], record["cmdline"]) == "gone"
    )
    assert wid in registered(orchestrator)
    cleaned = run_pool(["worker", "cleanup", "--json"], env)
    assert cleaned.code == 0, cleaned.err
    [item] = cleaned.json()["cleanup"]
    assert (item["worker_id"], item["action"], item["orchestrator"]) == (
        wid,
        "remove-gone",
        "deregistered",
    )
    assert wid not in registered(orchestrator)
    assert run_pool(["worker", "list", "--json"], env).json() == {"workers": []}
