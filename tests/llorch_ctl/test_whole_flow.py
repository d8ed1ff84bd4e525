"""The whole flow: two pool hosts (own namespace, own address, own sshd), orchestratord outside.

`llorch pool models import` and `llorch pool worker spawn` on both over SSH; the workers register;
tasks submitted with the SDK stream tokens served from both hosts; one host's worker is killed
and tasks go on on the other; `llorch pool worker cleanup --host` removes the dead one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from llorch_sdk import Client
from tests.llorch_ctl.conftest import (
    Ctl,
    orchestratord_on,
    pool_for,
    two_pool_hosts,
    write_inventory,
)
from tests.llorch_ctl.netns import NetHost
from tests.llorch_ctl.sshd import Sshd

pytestmark = [pytest.mark.e2e, pytest.mark.ssh, pytest.mark.netns]

API_KEY = "flow-client-key"
CLUSTER = "flow-cluster-token"
POOL_CMD = f"{shlex.quote(sys.executable)} -m pool_ctl"


def orchestratord(addr: str, tmp: Path) -> contextlib.AbstractContextManager[str]:
    """A real orchestratord listening only on `addr` (our side of host 1's link)."""
    return orchestratord_on(
        addr, tmp, "--api-key", API_KEY, "--cluster-token", CLUSTER,
        "--heartbeat-stale-ms", "2000", "--heartbeat-dead-ms", "4000",
    )  # fmt: skip


@dataclass
class Fleet:
    ctl: Ctl
    orch_url: str
    hosts: dict[str, NetHost]
    sshds: dict[str, Sshd]
    tmp: Path


@pytest.fixture
def fleet(tmp_path: Path, client_key: Path) -> Iterator[Fleet]:
    with contextlib.ExitStack() as stack:
        two = two_pool_hosts(stack, tmp_path, client_key)
        hosts, sshds, orch_addr = two.hosts, two.sshds, two.orch_addr
        orch_url = stack.enter_context(orchestratord(orch_addr, tmp_path))
        pools = {
            name: pool_for(
                sshds[name],
                POOL_CMD,
                env={
                    "LLORCH_HOME": str(tmp_path / f"home-{name}"),
                    "LLORCH_CLUSTER_TOKEN": CLUSTER,
                },
            )
            for name in hosts
        }
        ctl = write_inventory(tmp_path, pools)
        ctl.known_hosts.write_text("".join(s.known_hosts_line() for s in sshds.values()))
        yield Fleet(ctl, orch_url, hosts, sshds, tmp_path)


def run_tasks(client: Client, n: int) -> list[tuple[str, int, str]]:
    """Submit n tasks at once, then read each: (worker that served it, tokens_out, stop reason).

    Token events must arrive before `end`, and carry text.
    """
    ids = [
        client.submit("tiny", prompt=f"task {i}", max_tokens=48, seed=i).task_id for i in range(n)
    ]
    out = []
    for tid in ids:
        worker, text, end = "", "", {}
        for ev in client.events(tid):
            ev.raise_for_error()
            if ev.event == "started":
                worker = str(ev.data["worker_id"])
            elif ev.event == "token":
                text += str(ev.data["t"])
            elif ev.event == "end":
                end = ev.data
        assert text, f"task {tid} streamed no text"
        out.append((worker, int(end["tokens_out"]), str(end["stop_reason"])))
    return out


def test_two_pool_hosts_end_to_end(fleet: Fleet, tiny_model: Path) -> None:
    ctl = fleet.ctl
    records: dict[str, dict[str, object]] = {}
    for name, h in fleet.hosts.items():
        imp = ctl.run(
            "pool", "models", "import", "--host", name, str(tiny_model), "--id", "tiny", "--json"
        )
        assert imp.returncode == 0, imp.stderr
        spawn = ctl.run(
            "pool",
            "worker",
            "spawn",
            "cpu",
            "--host",
            name,
            "--model",
            "tiny",
            "--host",
            h.addr,
            "--orchestrator-url",
            fleet.orch_url,
            "--worker-id",
            f"w-{name}",
            "--json",
            timeout=180,
        )
        assert spawn.returncode == 0, spawn.stderr
        records[name] = json.loads(spawn.stdout)
        assert records[name]["url"] == f"http://{h.addr}:{records[name]['port']}"

    with Client(fleet.orch_url, api_key=CLUSTER) as registry:
        deadline = time.monotonic() + 30
        while {w["id"] for w in registry.workers()} != {"w-h1", "w-h2"}:
            assert time.monotonic() < deadline, f"workers did not register: {registry.workers()}"
            time.sleep(0.2)
    with Client(fleet.orch_url, api_key=API_KEY) as client:
        listed = ctl.run(
            "workers", "--orchestrator-url", fleet.orch_url, "--cluster-token", CLUSTER
        )
        assert listed.returncode == 0, listed.stderr
        assert {line.split()[0] for line in listed.stdout.splitlines()[1:]} == {"w-h1", "w-h2"}

        served: set[str] = set()
        for _ in range(5):
            for worker, tokens, end in run_tasks(client, 4):
                assert 0 < tokens <= 48 and end in ("MAX_TOKENS", "EOS")
                served.add(worker)
            if served == {"w-h1", "w-h2"}:
                break
        assert served == {"w-h1", "w-h2"}

        pid = records["h1"]["pid"]
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)
        after = run_tasks(client, 4)
        assert [worker for worker, _, _ in after] == ["w-h2"] * 4
        assert all(0 < tokens <= 48 and end in ("MAX_TOKENS", "EOS") for _, tokens, end in after)

    cleanup = ctl.run("pool", "worker", "cleanup", "--host", "h1", "--json")
    assert cleanup.returncode == 0, cleanup.stderr
    assert [(c["worker_id"], c["action"]) for c in json.loads(cleanup.stdout)["cleanup"]] == [
        ("w-h1", "remove-gone")
    ]
    gone = ctl.run("pool", "worker", "list", "--host", "h1", "--json")
    assert json.loads(gone.stdout)["workers"] == []
    still = ctl.run("pool", "worker", "list", "--host", "h2", "--json")
    assert [w["worker_id"] for w in json.loads(still.stdout)["workers"]] == ["w-h2"]
    status = ctl.run("pool", "status")
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line.split()[2:4] for line in status.stdout.splitlines()[1:]}
    assert rows == {"h1": ["ok", "0"], "h2": ["ok", "1"]}
