"""`worker spawn`: the worker's own settings, refusals before anything starts, and ports that
are never handed to two workers (real llorch-workerd processes)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path

import httpx
import pytest

from pool_ctl import procs
from pool_ctl.models import import_file
from pool_ctl.settings import Settings
from tests.pool_ctl.helpers import pool_env, run_pool, start_pool
from tests.support import free_port

pytestmark = pytest.mark.e2e


def test_spawn_passes_context_threads_and_queue_to_the_worker(home: Path, tiny_model: Path) -> None:
    """POOL-050: --n-ctx, --threads and --max-queue reach the worker; /health reports n_ctx."""
    import_file(Settings.build(home), tiny_model, model_id="tiny")
    env = pool_env(home)
    try:
        r = run_pool(
            [
                "worker",
                "spawn",
                "cpu",
                "--model",
                "tiny",
                "--json",
                "--n-ctx",
                "512",
                "--threads",
                "1",
                "--max-queue",
                "3",
            ],
            env,
        )
        assert r.code == 0, r.err
        record = r.json()
        health = httpx.get(record["url"] + "/health", timeout=5).json()
        assert (health["n_ctx"], health["worker_id"]) == (512, record["worker_id"])
        argv = procs.cmdline(record["pid"]) or []
        assert argv[argv.index("--threads") + 1] == "1"
        assert argv[argv.index("--max-queue") + 1] == "3"
        # The queue bound is the worker's: a fourth waiting request would get 503, which the
        # worker tests prove; here its value is what the worker was started with.
    finally:
        run_pool(["worker", "stop", "--all", "--grace", "2"], env)


def test_spawn_refuses_bad_settings_before_starting_anything(home: Path, tiny_model: Path) -> None:
    """POOL-050: a non-loopback --host without a token, and settings the worker would refuse,
    fail with one line and exit 10 before any process, record or log exists."""
    import_file(Settings.build(home), tiny_model, model_id="tiny")
    env = pool_env(home)
    cases = [
        (["--host", "0.0.0.0"], "--host 0.0.0.0 is reachable from other machines"),
        (["--host", "10.1.2.3"], "pass --cluster-token T"),
        (["--n-ctx", "10"], "--n-ctx 10 must be at least 64"),
        (["--threads", "0"], "--threads 0 must be at least 1"),
        (["--max-queue", "-1"], "--max-queue -1 must be 0 or more"),
    ]
    for extra, words in cases:
        r = run_pool(["worker", "spawn", "cpu", "--model", "tiny", *extra], env)
        assert r.code == 10, (extra, r.err)
        assert words in r.err and r.err.count("\n") == 1, r.err
    assert not (home / "logs").exists() and not (home / "workers").exists()


def test_concurrent_spawns_never_share_a_port_and_a_failed_load_is_not_ready(
    tmp_path: Path, tiny_model: Path
) -> None:
    """POOL-051, POOL-053: two spawns at the same moment from two homes (so no shared lock),
    one of a model that cannot load: they get different ports, the good one is ready and
    answers with its own id, the broken one fails (exit 8) instead of being reported ready
    because another worker answered on its port."""
    good_home, bad_home = tmp_path / "good" / "home", tmp_path / "bad" / "home"
    import_file(Settings.build(good_home), tiny_model, model_id="tiny")
    broken = tmp_path / "broken.gguf"
    shutil.copyfile(tiny_model, broken)
    import_file(Settings.build(bad_home), broken, model_id="tiny")
    with broken.open("r+b") as f:  # still says GGUF, but the tensors are gone
        f.truncate(4096)
    good_env, bad_env = pool_env(good_home), pool_env(bad_home)
    try:
        runs = [
            start_pool(["worker", "spawn", "cpu", "--model", "tiny", "--json"], e)
            for e in (good_env, bad_env)
        ]
        results = [p.communicate(timeout=120) for p in runs]
        good, bad = runs
        assert good.returncode == 0, results[0][1]
        assert bad.returncode == 8, results[1][1]
        err = results[1][1]
        assert "exited before it was ready" in err or "reported status 'failed'" in err, err
        record = json.loads(results[0][0])
        health = httpx.get(record["url"] + "/health", timeout=5).json()
        assert (health["status"], health["worker_id"]) == ("ready", record["worker_id"])
        bad_argv = [line for line in results[1][1].splitlines() if "waiting for worker" in line]
        assert bad_argv and f":{record['port']} " not in bad_argv[0], "one port, two workers"
        assert run_pool(["worker", "list", "--json"], bad_env).json() == {"workers": []}
    finally:
        run_pool(["worker", "stop", "--all", "--grace", "2"], good_env)
        run_pool(["worker", "stop", "--all", "--grace", "2"], bad_env)


def test_the_worker_runs_detached_with_its_own_argv_and_environment(
    home: Path, tiny_model: Path
) -> None:
    """POOL-052: the worker's argv (--pool passed on; a wildcard --host advertises this host's
    FQDN), its own session, stdin /dev/null, stdout and stderr appended to logs/<id>.log,
    working directory the home; the token in its environment only, and the caller's
    LLORCH_WORKER_*, LLORCH_CLUSTER_TOKEN and LLORCH_ORCHESTRATOR_URL do not reach it.
    POOL-004: progress on stderr, the record alone on stdout."""
    entry = import_file(Settings.build(home), tiny_model, model_id="tiny")
    nowhere = f"http://127.0.0.1:{free_port()}"  # an orchestratord that is down
    env = pool_env(
        home,
        LLORCH_WORKER_SLOTS="7",
        LLORCH_CLUSTER_TOKEN="token-of-the-caller",
        LLORCH_ORCHESTRATOR_URL=f"http://127.0.0.1:{free_port()}",
    )
    log = home / "logs" / "w-detached.log"
    log.parent.mkdir(parents=True)
    log.write_text("a line from an earlier run\n")
    args = ["worker", "spawn", "cpu", "--model", "tiny", "--host", "0.0.0.0", "--json"]
    args += ["--worker-id", "w-detached", "--pool", "blue", "--cluster-token", "tok-flag"]
    args += ["--orchestrator-url", nowhere]
    try:
        r = run_pool(args, env)
        assert r.code == 0, r.err
        record = json.loads(r.out)
        assert "waiting for worker w-detached" in r.err
        pid, port = record["pid"], record["port"]
        argv = procs.cmdline(pid) or []
        assert argv == record["cmdline"] and argv[:3] == [sys.executable, "-m", "worker"]
        flags = dict(zip(argv[3::2], argv[4::2], strict=True))
        assert flags == {
            "--model": entry["path"],
            "--model-name": "tiny",
            "--backend": "cpu",
            "--host": "0.0.0.0",
            "--port": str(port),
            "--slots": "1",
            "--worker-id": "w-detached",
            "--listen-fd": flags["--listen-fd"],  # the reserved port's socket (POOL-051)
            "--threads": str(record["threads"]),  # a share of the cores (POOL-100)
            "--orchestrator-url": nowhere,
            "--advertise-url": f"http://{socket.getfqdn()}:{port}",
            "--pool": "blue",
        }
        assert "tok-flag" not in " ".join(argv)
        proc = Path("/proc") / str(pid)
        environ = dict(
            item.split("=", 1)
            for item in (proc / "environ").read_bytes().decode().split("\0")
            if "=" in item
        )
        assert environ["LLORCH_CLUSTER_TOKEN"] == "tok-flag"
        assert "LLORCH_ORCHESTRATOR_URL" not in environ
        assert [k for k in environ if k.startswith("LLORCH_WORKER_")] == []
        assert os.getsid(pid) == pid
        assert os.readlink(proc / "cwd") == os.path.realpath(home)
        assert os.readlink(proc / "fd" / "0") == os.devnull
        for fd in ("1", "2"):
            assert os.readlink(proc / "fd" / fd) == os.path.realpath(log)
            info = (proc / "fdinfo" / fd).read_text().splitlines()
            open_flags = next(line.split()[1] for line in info if line.startswith("flags:"))
            assert int(open_flags, 8) & os.O_APPEND
        text = log.read_text()
        assert text.startswith("a line from an earlier run\n") and len(text.splitlines()) > 1
    finally:
        run_pool(["worker", "stop", "--all", "--grace", "2"], env)
