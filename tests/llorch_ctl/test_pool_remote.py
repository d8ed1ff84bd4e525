"""The real llorch-pool through `llorch pool ... --host` over a real sshd, then `llorch infer`."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llorch_ctl.conftest import Ctl, pool_for, write_inventory
from tests.llorch_ctl.sshd import Sshd

pytestmark = [pytest.mark.ssh, pytest.mark.e2e]

POOL_CMD = f"{shlex.quote(sys.executable)} -m pool_ctl"


@pytest.fixture
def pool_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "pool-home"
    yield home
    # Whatever the test left running on the "remote" host goes, even on failure.
    subprocess.run(
        [sys.executable, "-m", "pool_ctl", "worker", "stop", "--all", "--grace", "5"],
        env={**os.environ, "LLORCH_HOME": str(home)},
        capture_output=True,
        timeout=60,
    )


def test_remote_import_spawn_list_infer_stop(
    tmp_path: Path, sshd: Sshd, tiny_model: Path, pool_home: Path
) -> None:
    """CTL-050, CTL-020: the real llorch-pool over SSH imports a model and spawns a worker
    that `llorch infer --worker` streams from; list, status and stop work the same way."""
    ctl: Ctl = write_inventory(
        tmp_path, {"box": pool_for(sshd, POOL_CMD, env={"LLORCH_HOME": str(pool_home)})}
    )
    ctl.known_hosts.write_text(sshd.known_hosts_line())

    imp = ctl.run(
        "pool", "models", "import", "--host", "box", str(tiny_model), "--id", "tiny", "--json"
    )
    assert imp.returncode == 0, imp.stderr
    assert json.loads(imp.stdout)["id"] == "tiny"

    spawn = ctl.run(
        "pool", "worker", "spawn", "cpu", "--host", "box", "--model", "tiny", "--json", timeout=180
    )
    assert spawn.returncode == 0, spawn.stderr
    record = json.loads(spawn.stdout)
    assert record["state"] == "ready"
    url = record["url"]
    assert url.startswith("http://127.0.0.1:")

    listed = ctl.run("pool", "worker", "list", "--host", "box", "--json")
    assert listed.returncode == 0, listed.stderr
    [w] = json.loads(listed.stdout)["workers"]
    assert w["worker_id"] == record["worker_id"]

    status = ctl.run("pool", "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[1].split()[2:4] == ["ok", "1"]

    infer = ctl.run(
        "infer",
        "--worker",
        url.removeprefix("http://"),
        "--prompt",
        "hello",
        "--max-tokens",
        "5",
        "--seed",
        "1",
        "--stats",
    )
    assert infer.returncode == 0, infer.stderr
    end = json.loads(infer.stderr.strip().splitlines()[-1])
    assert end["tokens_out"] == 5
    assert end["stop_reason"] == "MAX_TOKENS"
    assert infer.stdout.endswith("\n") and len(infer.stdout) > 1

    stop = ctl.run("pool", "worker", "stop", "--host", "box", record["worker_id"], "--json")
    assert stop.returncode == 0, stop.stderr
    after = ctl.run("pool", "worker", "list", "--host", "box", "--json")
    assert json.loads(after.stdout)["workers"] == []


def test_remote_failure_exit_status_and_message_pass_through(
    tmp_path: Path, sshd: Sshd, pool_home: Path
) -> None:
    """CTL-020, CTL-040: llorch-pool's own failure (status and message) passes through
    unchanged."""
    ctl = write_inventory(
        tmp_path, {"box": pool_for(sshd, POOL_CMD, env={"LLORCH_HOME": str(pool_home)})}
    )
    ctl.known_hosts.write_text(sshd.known_hosts_line())
    r = ctl.run("pool", "worker", "spawn", "cpu", "--host", "box", "--model", "no-such-model")
    local = subprocess.run(
        [sys.executable, "-m", "pool_ctl", "worker", "spawn", "cpu", "--model", "no-such-model"],
        env={**os.environ, "LLORCH_HOME": str(pool_home)},
        capture_output=True,
        text=True,
    )
    assert local.returncode not in (0, 127)
    assert r.returncode == local.returncode
    assert r.stderr == local.stderr
