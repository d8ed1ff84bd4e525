"""`worker spawn|list|logs|stop|cleanup` with real llorch-workerd processes."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pool_ctl import procs
from pool_ctl.models import import_file
from pool_ctl.records import Records
from pool_ctl.settings import Settings
from tests.pool_ctl.helpers import pool_env, run_pool, start_pool, worker_record

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(home: Path, tiny_model: Path) -> Iterator[dict[str, str]]:
    """A home whose catalog holds the tiny model as "tiny"; every worker is stopped after."""
    import_file(Settings.build(home), tiny_model, model_id="tiny")
    e = pool_env(home)
    yield e
    run_pool(["worker", "stop", "--all", "--grace", "2"], e)


def spawn(env: dict[str, str], *extra: str) -> dict[str, Any]:
    r = run_pool(["worker", "spawn", "cpu", "--model", "tiny", "--json", *extra], env)
    assert r.code == 0, r.err
    record: dict[str, Any] = r.json()
    return record


def snapshot(home: Path) -> dict[str, tuple[bytes, int]]:
    """Every worker record file: its bytes and modification time."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (home / "workers").iterdir()}


def wait_not_ours(record: dict[str, Any], timeout: float = 10.0) -> procs.Identity:
    deadline = time.monotonic() + timeout
    while True:
        who = procs.identify(record["pid"], record["start_time"], record["cmdline"])
        if who != "ours" or time.monotonic() > deadline:
            return who
        time.sleep(0.05)


def test_spawn_list_logs_stop(env: dict[str, str], home: Path) -> None:
    """POOL-041: the default worker id is <short hostname>-<port>; printed records carry
    has_token, never the token. POOL-016: a model a live worker serves is removed only with
    --force, and a file outside models/ is kept. POOL-060: stop terminates, reports, removes the
    record and keeps the log; an unknown id is exit 3. POOL-055: list shows `ready`."""
    record = spawn(env, "--slots", "2")
    assert record["state"] == "ready" and record["model"] == "tiny" and record["slots"] == 2
    assert "token" not in record and record["has_token"] is False
    assert record["worker_id"] == f"{os.uname().nodename.split('.')[0]}-{record['port']}"
    health = httpx.get(record["url"] + "/health", timeout=5).json()
    assert health["status"] == "ready" and health["slots_total"] == 2
    assert health["worker_id"] == record["worker_id"]
    # Detached: its own session, so the SSH session that spawned it can end.
    assert os.getsid(record["pid"]) == record["pid"]
    assert procs.identify(record["pid"], record["start_time"], record["cmdline"]) == "ours"
    on_disk = json.loads((home / "workers" / f"{record['worker_id']}.json").read_text())
    assert on_disk["pid"] == record["pid"]
    assert (home / "workers" / f"{record['worker_id']}.json").stat().st_mode & 0o077 == 0

    listed = run_pool(["worker", "list", "--json"], env).json()["workers"]
    assert [(w["worker_id"], w["state"]) for w in listed] == [(record["worker_id"], "ready")]
    assert listed[0]["health"]["slots_total"] == 2
    assert "token" not in listed[0] and listed[0]["has_token"] is False
    human = run_pool(["worker", "list"], env).out
    assert record["worker_id"] in human and "ready" in human

    logs = run_pool(["worker", "logs", record["worker_id"]], env)
    assert logs.code == 0 and "ready" in logs.out
    in_use = run_pool(["models", "rm", "tiny"], env)
    assert in_use.code == 7 and f"in use by worker(s) {record['worker_id']}" in in_use.err
    forced = run_pool(["models", "rm", "tiny", "--force", "--json"], env)
    assert forced.code == 0, forced.err
    assert forced.json()["deleted_file"] is False  # imported in place: the user's file
    assert Path(record["model_path"]).is_file()

    stopped = run_pool(["worker", "stop", record["worker_id"], "--json"], env)
    assert stopped.code == 0, stopped.err
    assert stopped.json()["stopped"] == [
        {
            "worker_id": record["worker_id"],
            "process": "terminated",
            "orchestrator": "no orchestrator",
        }
    ]
    assert wait_not_ours(record) == "gone"
    assert run_pool(["worker", "list", "--json"], env).json() == {"workers": []}
    assert Path(record["log_path"]).exists()  # the log outlives the worker
    r = run_pool(["worker", "stop", record["worker_id"]], env)
    assert r.code == 3 and "no worker" in r.err


def test_cleanup_removes_the_record_of_a_killed_worker(env: dict[str, str], home: Path) -> None:
    """POOL-055: a worker whose process is gone is `exited`; POOL-070: cleanup removes its
    record (`remove-gone`)."""
    record = spawn(env)
    os.kill(record["pid"], signal.SIGKILL)
    assert wait_not_ours(record) == "gone"
    listed = run_pool(["worker", "list", "--json"], env).json()["workers"]
    assert [w["state"] for w in listed] == ["exited"]
    r = run_pool(["worker", "cleanup", "--json"], env)
    assert r.code == 0, r.err
    assert [(c["worker_id"], c["action"]) for c in r.json()["cleanup"]] == [
        (record["worker_id"], "remove-gone")
    ]
    assert not (home / "workers" / f"{record['worker_id']}.json").exists()


def test_cleanup_stops_a_stuck_worker_after_the_grace_period(
    env: dict[str, str], home: Path
) -> None:
    """POOL-055: a worker that is ours but does not answer is `unreachable`, and list changes no
    record. POOL-070: cleanup keeps a healthy worker and clears its unhealthy_since, marks the
    silent one (persisting unhealthy_since) and stops it once unhealthy for --grace seconds."""
    keep = spawn(env)
    stuck = spawn(env)
    records = Records(Settings.build(home).layout)
    records.save({**records.load(keep["worker_id"]), "unhealthy_since": time.time() - 30})
    os.kill(stuck["pid"], signal.SIGSTOP)  # alive, but /health never answers
    before = snapshot(home)
    listed = run_pool(["worker", "list", "--json"], env).json()["workers"]
    assert {w["worker_id"]: w["state"] for w in listed} == {
        keep["worker_id"]: "ready",
        stuck["worker_id"]: "unreachable",
    }
    assert snapshot(home) == before  # list only looks
    first = run_pool(["worker", "cleanup", "--json"], env).json()["cleanup"]
    actions = {c["worker_id"]: (c["state"], c["action"]) for c in first}
    assert actions == {
        keep["worker_id"]: ("ready", "keep"),
        stuck["worker_id"]: ("unreachable", "mark-unhealthy"),
    }
    assert records.load(keep["worker_id"])["unhealthy_since"] is None
    marked = records.load(stuck["worker_id"])["unhealthy_since"]
    assert marked is not None
    again = run_pool(["worker", "cleanup", "--json"], env).json()["cleanup"]
    assert {c["worker_id"]: c["action"] for c in again}[stuck["worker_id"]] == "mark-unhealthy"
    assert records.load(stuck["worker_id"])["unhealthy_since"] == marked  # counted from then
    assert procs.identify(stuck["pid"], stuck["start_time"], stuck["cmdline"]) == "ours"
    assert procs.state(stuck["pid"]) == "T"
    second = run_pool(["worker", "cleanup", "--grace", "0", "--json"], env).json()["cleanup"]
    after = {c["worker_id"]: c["action"] for c in second}
    assert after == {keep["worker_id"]: "keep", stuck["worker_id"]: "stop-unhealthy"}
    assert wait_not_ours(stuck) == "gone"
    assert run_pool(["worker", "list", "--json"], env).json()["workers"][0]["state"] == "ready"
    human = run_pool(["worker", "cleanup"], env)
    assert human.out.strip() == f"{keep['worker_id']} [ready]: healthy, kept"


def test_a_reused_pid_is_never_signalled(env: dict[str, str], home: Path) -> None:
    """POOL-042: a record whose pid now runs another program (other start time, or other
    command line) is reused: stop and cleanup never signal it. POOL-055: list shows
    `pid-reused` and changes nothing. POOL-070: cleanup removes those records
    (`remove-reused`)."""
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        started = procs.start_time(sleeper.pid)
        assert started is not None
        worker_argv = [sys.executable, "-m", "worker", "--model", "x.gguf", "--port", "8999"]
        records = Records(Settings.build(home).layout)
        base = worker_record(
            sleeper.pid,
            started + 7,
            ["sleep", "60"],
            worker_id="old-start",
            port=8999,
            url="http://127.0.0.1:8999",
            model="tiny",
            model_path="x.gguf",
        )
        records.save(base)
        records.save(
            {**base, "worker_id": "old-cmdline", "start_time": started, "cmdline": worker_argv}
        )
        records.save({**base, "worker_id": "stop-me", "start_time": started + 1})
        before = snapshot(home)
        listed = run_pool(["worker", "list", "--json"], env).json()["workers"]
        assert sorted((w["worker_id"], w["state"]) for w in listed) == [
            ("old-cmdline", "pid-reused"),
            ("old-start", "pid-reused"),
            ("stop-me", "pid-reused"),
        ]
        assert snapshot(home) == before
        stopped = run_pool(["worker", "stop", "stop-me", "--json", "--grace", "1"], env)
        assert stopped.json()["stopped"][0]["process"] == "reused"
        r = run_pool(["worker", "cleanup", "--json"], env)
        assert r.code == 0, r.err
        assert sorted((c["worker_id"], c["action"]) for c in r.json()["cleanup"]) == [
            ("old-cmdline", "remove-reused"),
            ("old-start", "remove-reused"),
        ]
        assert records.all() == []
        assert sleeper.poll() is None  # the unrelated process lives on
    finally:
        sleeper.kill()
        sleeper.wait()


def test_spawn_refuses_what_cannot_work(env: dict[str, str]) -> None:
    """POOL-033: spawn runs the backend detection and refuses an unavailable backend with exit 6
    and its reason. POOL-041: an invalid --worker-id is exit 10. POOL-050: each refusal is one
    line, before any worker exists."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = run_pool(["worker", "spawn", "cpu", "--model", "tiny", "--port", str(port)], env)
    assert r.code == 7 and f"port {port} on 127.0.0.1 is in use" in r.err
    r = run_pool(["worker", "spawn", "cpu", "--model", "nope"], env)
    assert r.code == 3 and "not in the catalog" in r.err
    if sys.platform == "linux":
        r = run_pool(["worker", "spawn", "metal", "--model", "tiny"], env)
        assert r.code == 6 and "backend metal is not available here: Metal needs macOS" in r.err
    r = run_pool(
        ["worker", "spawn", "cpu", "--model", "tiny", "--orchestrator-url", "http://x"], env
    )
    assert r.code == 10 and "--cluster-token" in r.err
    for result in (r,):
        assert result.err.count("\n") == 1
    r = run_pool(["worker", "spawn", "cpu", "--model", "tiny", "--worker-id", "a/b"], env)
    assert r.code == 10 and "worker id 'a/b' is not valid" in r.err
    assert run_pool(["worker", "list", "--json"], env).json() == {"workers": []}


def test_spawn_timeout_stops_the_worker_and_says_why(env: dict[str, str]) -> None:
    r = run_pool(["worker", "spawn", "cpu", "--model", "tiny", "--timeout", "0.05"], env)
    assert r.code == 8
    assert "was not ready after" in r.err and "it was stopped" in r.err
    m = re.search(r"\(pid (\d+)\)", r.err)
    assert m is not None
    assert procs.state(int(m[1])) in (None, "Z")
    assert run_pool(["worker", "list", "--json"], env).json() == {"workers": []}


def test_spawn_reports_a_worker_that_dies_with_its_log(
    env: dict[str, str], home: Path, tiny_model: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.gguf"
    shutil.copyfile(tiny_model, broken)
    import_file(Settings.build(home), broken, model_id="broken")
    with broken.open("r+b") as f:  # still says GGUF, but the tensors are gone
        f.truncate(4096)
    r = run_pool(["worker", "spawn", "cpu", "--model", "broken"], env)
    assert r.code == 8, r.err
    line = r.err.strip().splitlines()[-1]
    assert line.startswith("llorch-pool: error: worker ") and "see " in line
    assert run_pool(["worker", "list", "--json"], env).json() == {"workers": []}


def test_logs_follow_prints_new_lines_until_the_worker_ends(env: dict[str, str]) -> None:
    record = spawn(env)
    follower = start_pool(["worker", "logs", record["worker_id"], "-f", "-n", "1"], env)
    try:
        assert follower.stdout is not None
        history = follower.stdout.readline()  # the last line so far, printed at once
        # Lines written from now on reach the follower.
        with open(record["log_path"], "a") as log:
            log.write("marker line from the test\n")
        os.kill(record["pid"], signal.SIGKILL)
        out, err = follower.communicate(timeout=30)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait()
    assert follower.returncode == 0, err
    assert "ready" in history
    assert "marker line from the test" in out


def test_concurrent_spawns_get_different_ports(env: dict[str, str]) -> None:
    runs = [
        start_pool(["worker", "spawn", "cpu", "--model", "tiny", "--json"], env) for _ in range(2)
    ]
    records = []
    for p in runs:
        out, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
        records.append(json.loads(out))
    assert records[0]["port"] != records[1]["port"]
    listed = run_pool(["worker", "list", "--json"], env).json()["workers"]
    assert sorted(w["state"] for w in listed) == ["ready", "ready"]
