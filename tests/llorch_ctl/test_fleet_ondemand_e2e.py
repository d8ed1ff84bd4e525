"""Models on demand and placement over SSH (specs/fleet.md FLT-060..FLT-066, specs/ctl.md
CTL-100..CTL-102, specs/orchestrator.md ORCH-360, ORCH-361): two pool hosts in network
namespaces, an sshd each, orchestratord outside with a desired state, and the real
`llorch fleet apply` carrying the plan out.

On demand: `tiny` is desired on h2 with `min_replicas = 0` and no replica. A task for it
queues, `fleet apply --watch` spawns the replica on h2 and the task streams to its end; after
the idle TTL the replica is drained and stopped, and the next task brings it back.

Placement: a worker spawned by hand on h1 (its pool the host's name, which no fleet lists)
is misplaced: it is reported and keeps serving, the desired pool still gets its replica, and
`fleet apply` never fails on it; `--replace-misplaced` drains it once the placed one serves,
and its stop is skipped, as the inventory cannot reach its pool.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from llorch_sdk import Client
from tests.llorch_ctl.conftest import (
    LLORCH,
    Ctl,
    orchestratord_on,
    pool_for,
    toml_str,
    two_pool_hosts,
    write_inventory,
)

pytestmark = [pytest.mark.e2e, pytest.mark.ssh, pytest.mark.netns]

CLUSTER = "od-cluster-token"
API_KEY = "od-client-key"
ADMIN = "od-admin-token"
POOL_CMD = f"{shlex.quote(sys.executable)} -m pool_ctl"
IDLE_TTL_S = 4
# The pool hosts run this checkout's llorch-pool (the venv's editable install may be another).
ROOT = Path(__file__).resolve().parents[2]


def workers(url: str) -> dict[str, tuple[str, str]]:
    r = httpx.get(url + "/v2/workers", headers={"authorization": f"Bearer {CLUSTER}"})
    return {w["id"]: (w["pool"], w["state"]) for w in r.json()["workers"]}


def plan(url: str) -> dict[str, Any]:
    r = httpx.get(url + "/v2/fleet/plan", headers={"authorization": f"Bearer {ADMIN}"})
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


def wait_for(what: str, check: Callable[[], Any], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


@contextlib.contextmanager
def fleet_setup(tmp: Path, client_key: Path, tiny_model: Path, model: str) -> Iterator[Any]:
    """The two hosts, orchestratord with `model` (one [models.tiny] table body) as its fleet,
    and an inventory of h1 and h2; yields (url, ctl, hosts)."""
    fleet = tmp / "fleet.toml"
    fleet.write_text(
        f"[models.tiny]\nsource = {toml_str('file:' + str(tiny_model))}\n{model}"
        "[scaling]\ncooldown_s = 600\n"
    )
    with contextlib.ExitStack() as stack:
        two = two_pool_hosts(stack, tmp, client_key)
        url = stack.enter_context(
            orchestratord_on(
                two.hosts["h1"].gateway, tmp, "--cluster-token", CLUSTER, "--api-key", API_KEY,
                "--admin-token", ADMIN, "--fleet", str(fleet), "--heartbeat-stale-ms", "3000",
                "--heartbeat-dead-ms", "6000",
            )
        )  # fmt: skip
        pools = {
            name: pool_for(two.sshds[name], POOL_CMD,
                           env={"LLORCH_HOME": str(tmp / f"home-{name}"),
                                "LLORCH_CLUSTER_TOKEN": CLUSTER, "PYTHONPATH": str(ROOT)})
            for name in two.hosts
        }  # fmt: skip
        ctl = write_inventory(tmp, pools)
        ctl.known_hosts.write_text("".join(s.known_hosts_line() for s in two.sshds.values()))
        yield url, ctl, two.hosts


@contextlib.contextmanager
def watch(ctl: Ctl, url: str, log: Path) -> Iterator[Callable[[], str]]:
    """`llorch fleet apply --watch --interval 0.5` in the background; yields its output so far.
    Ended with SIGINT, as Ctrl-C (and the systemd unit's KillSignal) ends it."""
    args = [*LLORCH, "--config", str(ctl.config), "fleet", "apply", "--watch", "--interval",
            "0.5", "--orchestrator-url", url, "--admin-token", ADMIN]  # fmt: skip
    with log.open("w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield lambda: log.read_text(errors="replace")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=150)  # a spawn under way finishes first
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, log.read_text()


def stream(url: str) -> tuple[list[tuple[str, dict[str, Any]]], str]:
    """Submit a task for tiny and read it to its end: (events, generated text)."""
    with Client(url, api_key=API_KEY, timeout=300) as c:
        tid = c.submit("tiny", prompt="on demand", max_tokens=8, ignore_eos=True).task_id
        got = [(ev.event, dict(ev.data)) for ev in c.events(tid)]
    return got, "".join(str(d.get("t", "")) for n, d in got if n == "token")


@pytest.mark.timeout(900)  # two cold starts over SSH and an idle TTL, on a loaded machine
def test_flt_061_orch_360_a_task_brings_its_replica_up_and_idle_takes_it_away(
    tmp_path: Path, client_key: Path, tiny_model: Path
) -> None:
    """FLT-061, ORCH-360, ORCH-361, CTL-102, CTL-103: a task for tiny (0 replicas,
    min_replicas 0) queues and is told which spawn it waits for; `fleet apply --watch`
    imports the model on h2, spawns the replica there and the task streams to its end; the
    replica served nothing for the idle TTL, so it is drained and stopped; the next task
    brings it back."""
    model = f'pools = ["h2"]\nmin_replicas = 0\nmax_replicas = 1\nidle_ttl_s = {IDLE_TTL_S}\n'
    with fleet_setup(tmp_path, client_key, tiny_model, model) as (url, ctl, hosts):
        assert workers(url) == {}
        with watch(ctl, url, tmp_path / "watch.log") as output:
            wait_for("a first pass", lambda: "nothing to do" in output())
            first, text = stream(url)
            names = [n for n, _ in first]
            assert names[:2] == ["queued", "queued"] and names[-1] == "end", first
            assert first[1][1]["waiting_for"]["action_id"] == "spawn:tiny.h2.0"
            started = next(d for n, d in first if n == "started")
            assert started["worker_id"] == "tiny.h2.0" and text
            assert first[-1][1]["stop_reason"] == "MAX_TOKENS"
            # The spawn's SSH command returns once the worker is ready: maybe after the task.
            spawned = "ok   spawn:tiny.h2.0: spawned tiny.h2.0 at http://" + hosts["h2"].addr
            wait_for("the spawn to report", lambda: spawned in output())
            assert "imported tiny from file:" in output() and "skip memory" not in output()
            # Idle for IDLE_TTL_S: drained, then stopped on h2 and gone from the registry.
            wait_for("the idle replica to go", lambda: workers(url) == {}, 120)
            wait_for("the stop to report", lambda: "ok   stop:tiny.h2.0" in output())
            log = output()
            assert "ok   drain:tiny.h2.0" in log
            assert f"(idle_ttl_s {IDLE_TTL_S}): down to min_replicas 0" in log
            listed = ctl.run("pool", "worker", "list", "--host", "h2", "--json")
            assert json.loads(listed.stdout)["workers"] == []
            # The next task brings it back, on the same pool.
            again, text = stream(url)
            assert [n for n, _ in again][-1] == "end" and text, again
            assert next(d for n, d in again if n == "started")["worker_id"] == "tiny.h2.0"
            assert any("waiting_for" in d for n, d in again if n == "queued")
        assert "FAIL" not in output()


@pytest.mark.timeout(900)
def test_flt_060_flt_063_ctl_101_hand_spawned_worker_is_misplaced_not_fatal(
    tmp_path: Path, client_key: Path, tiny_model: Path
) -> None:
    """FLT-006, FLT-060, FLT-063, CTL-100, CTL-101: tiny is desired on h2; a worker spawned by
    hand on h1 registers with its host's name as its pool. `fleet apply` reports it
    misplaced, leaves it serving and still spawns tiny's replica on h2 (before: it counted
    the hand-spawned one, and once two ran it drained that one and failed to stop it with
    `unknown pool`); `--replace-misplaced` drains it, and skips its stop (exit 0)."""
    model = 'pools = ["h2"]\nmin_replicas = 1\nmax_replicas = 1\n'
    host_pool = socket.gethostname()  # the hosts share this machine's name: a `vm` of its own
    with fleet_setup(tmp_path, client_key, tiny_model, model) as (url, ctl, hosts):
        imported = ctl.run("pool", "models", "import", str(tiny_model), "--id", "tiny",
                           "--host", "h1", "--json")  # fmt: skip
        assert imported.returncode == 0, imported.stderr
        hand = ctl.run("pool", "worker", "spawn", "cpu", "--host", "h1", "--model", "tiny",
                       "--worker-id", "hand", "--host", hosts["h1"].addr,
                       "--orchestrator-url", url, "--json", timeout=300)  # fmt: skip
        assert hand.returncode == 0, hand.stdout + hand.stderr
        wait_for("the hand-spawned worker", lambda: workers(url) == {"hand": (host_pool, "ready")})
        up = ctl.run("fleet", "apply", "--orchestrator-url", url, "--admin-token", ADMIN,
                     timeout=300)  # fmt: skip
        assert up.returncode == 0, up.stdout + up.stderr
        assert "misplaced hand (tiny): not on its pools [h2]" in up.stdout
        assert "ok   spawn:tiny.h2.0" in up.stdout
        wait_for("tiny.h2.0", lambda: workers(url).get("tiny.h2.0") == ("h2", "ready"))
        assert plan(url)["models"][0]["misplaced"] == ["hand"]
        again = ctl.run("fleet", "apply", "--orchestrator-url", url, "--admin-token", ADMIN)
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout
        assert workers(url)["hand"] == (host_pool, "ready")
        replace = ctl.run("fleet", "apply", "--replace-misplaced", "--orchestrator-url", url,
                          "--admin-token", ADMIN)  # fmt: skip
        assert replace.returncode == 0, replace.stdout + replace.stderr
        assert "ok   drain:hand" in replace.stdout
        wait_for("hand to drain", lambda: workers(url)["hand"] == (host_pool, "drained"))
        stop = ctl.run("fleet", "apply", "--replace-misplaced", "--orchestrator-url", url,
                       "--admin-token", ADMIN)  # fmt: skip
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert f"(pool '{host_pool}' is not in the inventory: stop hand there)" in stop.stdout
        gone = ctl.run("pool", "worker", "stop", "hand", "--host", "h1")
        assert gone.returncode == 0, gone.stderr
        wait_for("hand to leave", lambda: "hand" not in workers(url))
        assert workers(url) == {"tiny.h2.0": ("h2", "ready")}
