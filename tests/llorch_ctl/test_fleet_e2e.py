"""The fleet converges over SSH (specs/fleet.md FLT-012..FLT-043, FLT-030): two pool hosts in
network namespaces, an sshd each, orchestratord outside with a desired state.

`llorch fleet apply` first imports the model and spawns the minimum replica on h1; load rises
until the plan asks for a second replica, `--dry-run` prints the actions and changes nothing,
apply imports the model and spawns it on h2 over SSH, where it registers and takes tasks; the
load falls and, after the cooldown, apply drains the extra replica and then stops it, and no
task is lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
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
from tests.support import require

pytestmark = [pytest.mark.e2e, pytest.mark.ssh, pytest.mark.netns]

CLUSTER = "fleet-cluster-token"
API_KEY = "fleet-client-key"
ADMIN = "fleet-admin-token"
POOL_CMD = f"{shlex.quote(sys.executable)} -m pool_ctl"
# The tiny model generates ~10k tokens/s but every token crosses the orchestrator's SSE and the
# client's parser, so long tasks cost seconds of the two cores. A 10 ms TTFT target lets a
# backlog of four 100-token tasks ask for a second replica (FLT-012: 400 tokens need more than
# one replica at any rate under 40k tokens/s); the cooldown only has to outlast the spawn on h2
# and the end of the load (FLT-015 itself is proved in tests/orchestratord/test_fleet_plan.py).
TARGET_TTFT_MS = 10
MAX_TOKENS = 100
COOLDOWN_S = 15


def orchestratord(addr: str, tmp: Path, fleet: Path) -> contextlib.AbstractContextManager[str]:
    return orchestratord_on(
        addr, tmp, "--cluster-token", CLUSTER, "--api-key", API_KEY, "--admin-token", ADMIN,
        "--fleet", str(fleet), "--heartbeat-stale-ms", "3000", "--heartbeat-dead-ms", "6000",
    )  # fmt: skip


class Load:
    """`n` clients, each with one task outstanding at all times until stopped: every task is
    submitted, read to its end, and recorded (worker, status)."""

    def __init__(self, url: str, n: int, max_tokens: int) -> None:
        self.url, self.max_tokens = url, max_tokens
        self.stop = threading.Event()
        self.done: list[tuple[str, str, str]] = []  # (task id, worker id, end or error code)
        self.errors: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(n)]
        for t in self.threads:
            t.start()

    def _run(self, i: int) -> None:
        try:
            with Client(self.url, api_key=API_KEY) as c:
                n = 0
                while not self.stop.is_set():
                    n += 1
                    tid = c.submit("tiny", prompt=f"load {i} {n}", max_tokens=self.max_tokens,
                                   ignore_eos=True, seed=n).task_id  # fmt: skip
                    worker, outcome = "", "?"
                    for ev in c.events(tid):
                        if ev.event == "started":
                            worker = str(ev.data["worker_id"])
                        elif ev.event == "end":
                            outcome = str(ev.data["stop_reason"])
                        elif ev.event == "error":
                            outcome = str(ev.data["code"])
                    self.done.append((tid, worker, outcome))
        except Exception as e:  # reported by the test, not lost in the thread
            self.errors.append(repr(e))

    def served_by(self, worker: str) -> int:
        return sum(1 for _, w, _ in self.done if w == worker)

    def end(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=300)


def plan(url: str) -> dict[str, Any]:
    r = httpx.get(url + "/v2/fleet/plan", headers={"authorization": f"Bearer {ADMIN}"})
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


def workers(url: str) -> dict[str, str]:
    r = httpx.get(url + "/v2/workers", headers={"authorization": f"Bearer {CLUSTER}"})
    return {w["id"]: w["state"] for w in r.json()["workers"]}


def wait_for(what: str, check: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def apply(ctl: Ctl, url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return ctl.run("fleet", "apply", "--orchestrator-url", url, "--admin-token", ADMIN,
                   *extra, timeout=300)  # fmt: skip


def apply_twice_at_once(ctl: Ctl, url: str) -> list[str]:
    """Two `llorch fleet apply` at the same time; their outputs (each must exit 0)."""
    args = [*LLORCH, "--config", str(ctl.config), "fleet", "apply", "--orchestrator-url", url,
            "--admin-token", ADMIN]  # fmt: skip
    procs = [
        subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out + err
        outs.append(out)
    return outs


def lines(out: str, prefix: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(prefix)]


@pytest.mark.timeout(600)  # two spawns over SSH on a loaded machine, and the cooldown
def test_fleet_scales_up_and_down_over_ssh(
    tmp_path: Path, client_key: Path, tiny_model: Path
) -> None:
    require(os.geteuid() == 0, "network namespaces need root")
    require(shutil.which("ip") is not None, "iproute2 (`ip`) is not installed")
    fleet = tmp_path / "fleet.toml"
    fleet.write_text(
        f"[scaling]\ntarget_ttft_ms = {TARGET_TTFT_MS}\ncooldown_s = {COOLDOWN_S}\n\n"
        f"[models.tiny]\nsource = {toml_str('file:' + str(tiny_model))}\n"
        'pools = ["h1", "h2"]\nslots = 1\nmin_replicas = 1\nmax_replicas = 2\n'
    )
    with contextlib.ExitStack() as stack:
        two = two_pool_hosts(stack, tmp_path, client_key)
        hosts, sshds = two.hosts, two.sshds
        url = stack.enter_context(orchestratord(hosts["h1"].gateway, tmp_path, fleet))
        pools = {
            name: pool_for(sshds[name], POOL_CMD,
                           env={"LLORCH_HOME": str(tmp_path / f"home-{name}"),
                                "LLORCH_CLUSTER_TOKEN": CLUSTER})
            for name in hosts
        }  # fmt: skip
        ctl = write_inventory(tmp_path, pools)
        ctl.known_hosts.write_text("".join(s.known_hosts_line() for s in sshds.values()))

        # 1. No worker yet: the minimum replica is imported and spawned on h1, the first pool,
        # by one of two applies run at once; the other skips what the first holds.
        outs = apply_twice_at_once(ctl, url)
        both = "".join(outs)
        assert len(lines(both, "ok   spawn:tiny.h1.0")) == 1, outs
        assert len(lines(both, "run  spawn tiny.h1.0")) == 1, outs
        assert "imported tiny from file:" in both
        assert any(lines(out, "skip") or "nothing to do" in out for out in outs), outs
        wait_for("tiny.h1.0 to register", lambda: workers(url) == {"tiny.h1.0": "ready"})
        again = apply(ctl, url)
        assert again.returncode == 0 and "nothing to do" in again.stdout, again.stdout

        # 2. Load rises: 4 clients, one task each outstanding, on one 1-slot replica.
        load = Load(url, 4, max_tokens=MAX_TOKENS)
        try:
            seen: list[dict[str, Any]] = []

            def queued() -> bool:
                seen.append(plan(url))
                return int(seen[-1]["models"][0]["load"]["queued_tasks"]) >= 2

            wait_for("a queue", queued)
            # The plan's first answer of 2 replicas is the change the cooldown counts from.
            changed_ms = next(p["now_ms"] for p in seen if p["models"][0]["planned_replicas"] == 2)
            dry = apply(ctl, url, "--dry-run")
            assert dry.returncode == 0, dry.stdout + dry.stderr
            would = lines(dry.stdout, "would")
            assert [w.split(":")[0] for w in would] == [
                "would ensure model tiny on h2", "would spawn tiny.h2.0 (tiny) on h2"
            ]  # fmt: skip
            # --dry-run changed nothing: no lease, no model on h2, no new worker.
            assert all(a["lease"] is None for a in plan(url)["actions"])
            listed = ctl.run("pool", "models", "list", "--host", "h2", "--json")
            assert json.loads(listed.stdout)["models"] == []
            assert set(workers(url)) == {"tiny.h1.0"}

            up = apply(ctl, url)
            assert up.returncode == 0, up.stdout + up.stderr
            ran = [r.removeprefix("run  ").split(":")[0] for r in lines(up.stdout, "run")]
            assert ran == [w.removeprefix("would ").split(":")[0] for w in would]
            assert "spawned tiny.h2.0 at http://" + hosts["h2"].addr in up.stdout
            wait_for("tiny.h2.0 to take tasks", lambda: load.served_by("tiny.h2.0") >= 2, 180)
        finally:
            # 3. Load falls.
            load.end()
        assert load.errors == []
        assert load.done and all(outcome == "MAX_TOKENS" for _, _, outcome in load.done)
        assert load.served_by("tiny.h1.0") >= 1

        # 4. After the cooldown, the extra replica is drained, then stopped.
        p = plan(url)
        if p["now_ms"] - changed_ms < COOLDOWN_S * 1000:
            assert p["actions"] == [] and "cooldown" in p["models"][0]["reason"], p
        drained: list[dict[str, Any]] = []

        def drain_planned() -> bool:
            drained.append(plan(url))
            return bool(drained[-1]["actions"])

        wait_for("the plan to drain", drain_planned, 90)
        assert drained[-1]["now_ms"] - changed_ms >= COOLDOWN_S * 1000
        down = apply(ctl, url)
        assert down.returncode == 0, down.stdout + down.stderr
        assert [r.split(":")[0] for r in lines(down.stdout, "run")] == [
            "run  drain tiny.h2.0 on h2"
        ]
        assert workers(url) == {"tiny.h1.0": "ready", "tiny.h2.0": "drained"}
        stop = apply(ctl, url)
        assert stop.returncode == 0, stop.stdout + stop.stderr
        assert [r.split(":")[0] for r in lines(stop.stdout, "run")] == ["run  stop tiny.h2.0 on h2"]
        wait_for("tiny.h2.0 to leave", lambda: workers(url) == {"tiny.h1.0": "ready"})
        gone = ctl.run("pool", "worker", "list", "--host", "h2", "--json")
        assert json.loads(gone.stdout)["workers"] == []
        last = apply(ctl, url)
        assert last.returncode == 0 and "nothing to do" in last.stdout, last.stdout
