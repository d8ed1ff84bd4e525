"""`llorch infer --model`, `llorch tasks`, `llorch workers` against real orchestratord + worker."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.llorch_ctl.conftest import LLORCH
from tests.support import Proc, free_port, spawn, spawn_worker

pytestmark = pytest.mark.e2e

API_KEY = "client-key"
CLUSTER = "cluster-token"


@pytest.fixture(scope="module")
def fleet(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[tuple[Proc, Proc]]:
    tmp = tmp_path_factory.mktemp("orch")
    port = free_port()
    args = [
        "orchestratord",
        "--port",
        str(port),
        "--state-dir",
        str(tmp),
        "--api-key",
        API_KEY,
        "--cluster-token",
        CLUSTER,
    ]
    with spawn(args, port, tmp / "orchd.log", "/health") as orchd:
        extra = ["--orchestrator-url", orchd.url, "--worker-id", "w-ctl", "--pool", "ctl-test"]
        with spawn_worker(tiny_model, tmp, token=CLUSTER, extra=extra) as worker:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                r = httpx.get(
                    orchd.url + "/v2/workers", headers={"Authorization": f"Bearer {CLUSTER}"}
                )
                if r.status_code == 200 and r.json()["workers"]:
                    break
                time.sleep(0.1)
            else:
                raise RuntimeError(f"worker never registered:\n{worker.log_text()[-2000:]}")
            yield orchd, worker


def llorch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LLORCH, "--config", os.devnull, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_infer_through_orchestratord_and_task_status(fleet: tuple[Proc, Proc]) -> None:
    orchd, _ = fleet
    env = {"LLORCH_ORCHESTRATOR_URL": orchd.url, "LLORCH_API_KEY": API_KEY}
    r = llorch(
        "infer",
        "--model",
        "llorch-tiny",
        "--prompt",
        "hello",
        "--max-tokens",
        "4",
        "--stats",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    end = json.loads(r.stderr.strip().splitlines()[-1])
    assert end["tokens_out"] == 4
    assert r.stdout.endswith("\n") and len(r.stdout) > 1
    s = llorch("tasks", "status", end["task_id"], env=env)
    assert s.returncode == 0, s.stderr
    record = json.loads(s.stdout)
    assert (record["id"], record["status"]) == (end["task_id"], "succeeded")
    c = llorch("tasks", "cancel", end["task_id"], env=env)
    assert c.returncode == 0, c.stderr


def test_workers_shows_the_registry(fleet: tuple[Proc, Proc]) -> None:
    orchd, worker = fleet
    r = llorch("workers", "--orchestrator-url", orchd.url, "--cluster-token", CLUSTER)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["ID", "POOL", "MODEL", "BACKEND", "STATE", "SLOTS", "TOK/S", "URL"]
    assert lines[1].split()[:6] == ["w-ctl", "ctl-test", "llorch-tiny", "cpu", "ready", "0/1"]
    assert lines[1].split()[-1] == worker.url
    j = llorch(
        "workers",
        "--json",
        env={"LLORCH_ORCHESTRATOR_URL": orchd.url, "LLORCH_CLUSTER_TOKEN": CLUSTER},
    )
    assert [w["id"] for w in json.loads(j.stdout)] == ["w-ctl"]


def test_orchestrator_errors_are_one_line(fleet: tuple[Proc, Proc]) -> None:
    orchd, _ = fleet
    bad_key = llorch("tasks", "status", "x", "--orchestrator-url", orchd.url, "--api-key", "wrong")
    assert bad_key.returncode == 211
    assert "UNAUTHORIZED" in bad_key.stderr
    assert len(bad_key.stderr.strip().splitlines()) == 1
    missing = llorch(
        "tasks", "status", "no-such-task", "--orchestrator-url", orchd.url, "--api-key", API_KEY
    )
    assert missing.returncode == 211
    assert "NOT_FOUND" in missing.stderr
    down = llorch("workers", "--orchestrator-url", f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 210
    assert "cannot reach orchestratord" in down.stderr


def test_infer_straight_from_a_worker_with_token(fleet: tuple[Proc, Proc]) -> None:
    _, worker = fleet
    addr = f"127.0.0.1:{worker.port}"
    r = llorch(
        "infer",
        "--worker",
        addr,
        "--cluster-token",
        CLUSTER,
        "--prompt",
        "hi",
        "--max-tokens",
        "3",
        "--stats",
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stderr.strip().splitlines()[-1])["tokens_out"] == 3
    no_token = llorch("infer", "--worker", addr, "--prompt", "hi")
    assert no_token.returncode == 211
    assert "401" in no_token.stderr
    bad = llorch(
        "infer",
        "--worker",
        addr,
        "--cluster-token",
        CLUSTER,
        "--prompt",
        "hi",
        "--temperature",
        "-1",
    )
    assert bad.returncode == 2
    nonsense = llorch("infer", "--worker", "no-port", "--prompt", "hi")
    assert nonsense.returncode == 200
    assert "HOST:PORT" in nonsense.stderr
