"""The thread budget and the drained state through the real llorch-pool over a real sshd, with
a real orchestratord on loopback: `worker spawn` shares the host's physical cores among its
workers, `worker list` shows the threads and what orchestratord's registry says."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.cpus import physical_cores
from tests.llorch_ctl.conftest import Ctl, pool_for, write_inventory
from tests.llorch_ctl.sshd import Sshd
from tests.support import free_port, spawn

pytestmark = [pytest.mark.ssh, pytest.mark.e2e]

POOL_CMD = f"{shlex.quote(sys.executable)} -m pool_ctl"
ROOT = Path(__file__).resolve().parents[2]
CLUSTER = "cluster-token"
ADMIN = "admin-token"


@pytest.fixture
def pool_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "pool-home"
    yield home
    subprocess.run(
        [sys.executable, "-m", "pool_ctl", "worker", "stop", "--all", "--grace", "5"],
        env={**os.environ, "LLORCH_HOME": str(home)},
        capture_output=True,
        timeout=60,
    )


def test_pool_100_spawn_shares_the_cores_and_list_shows_threads_and_drained(
    tmp_path: Path, sshd: Sshd, tiny_model: Path, pool_home: Path
) -> None:
    """POOL-100, POOL-101, WRK-150: with no --threads the first worker gets every physical core
    and the second half of them (at least 1); each record says how many and why, `worker list`
    shows them; a worker orchestratord drained is `drained` in `worker list`, not `ready`, and
    `ready` again after `llorch workers undrain`."""
    # The pool host runs this checkout's llorch-pool, whatever the interpreter has installed.
    env = {"LLORCH_HOME": str(pool_home), "PYTHONPATH": str(ROOT)}
    ctl: Ctl = write_inventory(tmp_path, {"box": pool_for(sshd, POOL_CMD, env=env)})
    ctl.known_hosts.write_text(sshd.known_hosts_line())
    port = free_port()
    args = ["orchestratord", "--port", str(port), "--state-dir", str(tmp_path / "orchd")]
    args += ["--cluster-token", CLUSTER, "--admin-token", ADMIN]
    with spawn(args, port, tmp_path / "orchd.log", "/health") as orchd:
        imp = ctl.run("pool", "models", "import", "--host", "box", str(tiny_model), "--id", "tiny")
        assert imp.returncode == 0, imp.stderr
        records = []
        for _ in range(2):
            r = ctl.run(
                "pool", "worker", "spawn", "cpu", "--host", "box", "--model", "tiny",
                "--orchestrator-url", orchd.url, "--cluster-token", CLUSTER, "--json",
                timeout=180,
            )  # fmt: skip
            assert r.returncode == 0, r.stderr
            records.append(json.loads(r.stdout))
        cores = physical_cores()
        assert [rec["threads"] for rec in records] == [cores, max(1, cores // 2)]
        assert records[1]["threads_rule"] == f"{cores} physical cores shared by 2 workers"
        for rec in records:
            i = rec["cmdline"].index("--threads")
            assert rec["cmdline"][i + 1] == str(rec["threads"])

        def listed() -> dict[str, dict[str, object]]:
            out = ctl.run("pool", "worker", "list", "--host", "box", "--json")
            assert out.returncode == 0, out.stderr
            return {w["worker_id"]: w for w in json.loads(out.stdout)["workers"]}

        first, second = records[0]["worker_id"], records[1]["worker_id"]
        assert {w: v["state"] for w, v in listed().items()} == {first: "ready", second: "ready"}
        admin = {"LLORCH_ORCHESTRATOR_URL": orchd.url, "LLORCH_ADMIN_TOKEN": ADMIN}
        drained = ctl.run("workers", "drain", first, env=admin)
        assert drained.returncode == 0, drained.stderr
        now = listed()
        assert now[first]["state"] == "drained" and now[first]["registry_state"] == "drained"
        assert now[second]["state"] == "ready"
        table = ctl.run("pool", "worker", "list", "--host", "box")
        assert table.returncode == 0, table.stderr
        header, *rows = table.stdout.splitlines()
        assert header.split()[-1] == "THREADS"
        row = next(line.split() for line in rows if line.startswith(first))
        assert row[1] == "drained" and row[-1] == str(cores)
        assert rows[-1].startswith(f"threads: {cores + max(1, cores // 2)} in use on {cores}")
        undrained = ctl.run("workers", "undrain", first, env=admin)
        assert undrained.returncode == 0, undrained.stderr
        assert listed()[first]["state"] == "ready"
