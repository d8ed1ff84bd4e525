"""`llorch infer --model`, `llorch tasks`, `llorch workers` against real orchestratord + worker."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
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


def orch_env(orchd: Proc) -> dict[str, str]:
    return {"LLORCH_ORCHESTRATOR_URL": orchd.url, "LLORCH_API_KEY": API_KEY}


def test_chat_messages_with_a_system_prompt_through_orchestratord(
    fleet: tuple[Proc, Proc],
) -> None:
    """CTL-030: `infer --system/--message` sends chat messages, which the worker renders with
    the model's template; --prompt and --message are exclusive."""
    orchd, _ = fleet
    r = llorch(
        "infer",
        "--model",
        "llorch-tiny",
        "--system",
        "Answer briefly.",
        "--message",
        "hello",
        "--max-tokens",
        "3",
        "--stats",
        env=orch_env(orchd),
    )
    assert r.returncode == 0, r.stderr
    lines = r.stderr.strip().splitlines()
    accepted, end = json.loads(lines[0]), json.loads(lines[-1])
    assert accepted["task_id"] == end["task_id"] and end["tokens_out"] == 3
    both = llorch("infer", "--model", "m", "--prompt", "x", "--message", "y")
    assert both.returncode == 2 and "exactly one of --prompt" in both.stderr
    lonely = llorch("infer", "--model", "m", "--prompt", "x", "--system", "y")
    assert lonely.returncode == 2 and "--system goes with --message" in lonely.stderr


def test_cancelling_a_finished_task_says_so(fleet: tuple[Proc, Proc]) -> None:
    """CTL-031: `tasks cancel` of a task that already finished says so, not "cancelled"."""
    orchd, _ = fleet
    env = orch_env(orchd)
    r = llorch(
        "infer", "--model", "llorch-tiny", "--prompt", "x", "--max-tokens", "2", "--stats", env=env
    )
    assert r.returncode == 0, r.stderr
    task_id = json.loads(r.stderr.strip().splitlines()[-1])["task_id"]
    c = llorch("tasks", "cancel", task_id, env=env)
    assert c.returncode == 0, c.stderr
    assert c.stderr.strip() == f"task {task_id} had already finished (succeeded); nothing to cancel"


def test_ctrl_c_cancels_the_task_at_once(fleet: tuple[Proc, Proc], tmp_path: Path) -> None:
    """CTL-034: Ctrl-C on `infer --model` cancels its task before llorch exits (130), instead of
    leaving it to run until orchestratord notices the client is gone."""
    orchd, worker = fleet
    # A stopped worker holds the task wherever it is (queued or dispatched): no timing race.
    os.kill(worker.proc.pid, signal.SIGSTOP)
    err_file = tmp_path / "stderr"
    try:
        with err_file.open("w") as sink:
            p = subprocess.Popen(
                [
                    *LLORCH,
                    "--config",
                    os.devnull,
                    "infer",
                    "--model",
                    "llorch-tiny",
                    "--prompt",
                    "x",
                    "--max-tokens",
                    "8",
                    "--stats",
                ],
                stdout=subprocess.DEVNULL,
                stderr=sink,
                env={**os.environ, **orch_env(orchd)},
            )
        deadline = time.monotonic() + 60
        while not err_file.read_text().endswith("\n") and time.monotonic() < deadline:
            time.sleep(0.01)
        task_id = json.loads(err_file.read_text())["task_id"]
        p.send_signal(signal.SIGINT)
        p.wait(timeout=60)
        err = err_file.read_text().splitlines()
        assert p.returncode == 130, err
        assert err[1:] == [f"llorch: interrupted; cancelled task {task_id}"]
        record = httpx.get(
            f"{orchd.url}/v2/tasks/{task_id}", headers={"Authorization": f"Bearer {API_KEY}"}
        ).json()
        assert record["status"] == "cancelled", record
    finally:
        os.kill(worker.proc.pid, signal.SIGCONT)


def test_tasks_list_shows_the_tenants_tasks_newest_first(fleet: tuple[Proc, Proc]) -> None:
    """CTL-035 (GET /v2/tasks): `tasks list` prints a table and --json the records, newest
    first, with --status and --model filters."""
    orchd, _ = fleet
    env = orch_env(orchd)
    ids = []
    for _ in range(2):
        r = llorch(
            "infer",
            "--model",
            "llorch-tiny",
            "--prompt",
            "x",
            "--max-tokens",
            "1",
            "--stats",
            env=env,
        )
        assert r.returncode == 0, r.stderr
        ids.append(json.loads(r.stderr.strip().splitlines()[-1])["task_id"])
    j = llorch("tasks", "list", "--json", "--status", "succeeded", "--limit", "500", env=env)
    assert j.returncode == 0, j.stderr
    listed = json.loads(j.stdout)
    assert [t["id"] for t in listed][:2] == ids[::-1]
    assert {t["status"] for t in listed} == {"succeeded"}
    table = llorch("tasks", "list", "--model", "llorch-tiny", "--limit", "1", env=env)
    assert table.returncode == 0, table.stderr
    head, row = table.stdout.splitlines()
    assert head.split() == [
        "ID",
        "STATUS",
        "MODEL",
        "TENANT",
        "WORKER",
        "TOKENS",
        "TTFT",
        "AGE",
        "REASON",
    ]
    assert row.split()[:3] == [ids[-1], "succeeded", "llorch-tiny"]
    none = llorch("tasks", "list", "--model", "no-such-model", env=env)
    assert none.returncode == 0 and none.stdout == "no tasks\n"
    bad = llorch("tasks", "list", "--since", "yesterday", env=env)
    assert bad.returncode == 200 and "--since 'yesterday'" in bad.stderr


def test_workers_rm_removes_a_dead_worker(
    fleet: tuple[Proc, Proc], tiny_model: Path, tmp_path: Path
) -> None:
    """CTL-036: `llorch workers rm ID` removes a worker that died without deregistering; an
    unknown id is said, not an error."""
    orchd, _ = fleet
    extra = ["--orchestrator-url", orchd.url, "--worker-id", "w-doomed", "--pool", "ctl-test"]
    env = {"LLORCH_ORCHESTRATOR_URL": orchd.url, "LLORCH_CLUSTER_TOKEN": CLUSTER}

    def ids() -> list[str]:
        r = llorch("workers", "--json", env=env)
        assert r.returncode == 0, r.stderr
        return [w["id"] for w in json.loads(r.stdout)]

    with spawn_worker(tiny_model, tmp_path, token=CLUSTER, extra=extra) as doomed:
        deadline = time.monotonic() + 30
        while "w-doomed" not in ids() and time.monotonic() < deadline:
            time.sleep(0.1)
        doomed.kill()  # SIGKILL: it cannot deregister itself
    assert "w-doomed" in ids()
    r = llorch("workers", "rm", "w-doomed", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "removed worker w-doomed from the registry"
    assert "w-doomed" not in ids() and "w-ctl" in ids()
    again = llorch("workers", "rm", "w-doomed", env=env)
    assert again.returncode == 0
    assert again.stderr.strip() == "worker w-doomed is not registered; nothing to remove"


def test_infer_straight_from_a_worker_takes_the_inventorys_cluster_token(
    fleet: tuple[Proc, Proc], tmp_path: Path
) -> None:
    """CTL-030: `infer --worker` presents the inventory's cluster token when none is given."""
    _, worker = fleet
    inventory = tmp_path / "config.toml"
    inventory.write_text(f'[orchestrator]\ncluster_token = "{CLUSTER}"\n')
    r = subprocess.run(
        [
            *LLORCH,
            "--config",
            str(inventory),
            "infer",
            "--worker",
            f"127.0.0.1:{worker.port}",
            "--prompt",
            "hi",
            "--max-tokens",
            "2",
            "--stats",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("LLORCH_")},
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stderr.strip().splitlines()[-1])["tokens_out"] == 2


def test_orch_247_infer_with_a_json_schema_file(fleet: tuple[Proc, Proc], tmp_path: Path) -> None:
    """ORCH-247: `llorch infer --json-schema FILE` prints JSON that matches the file's schema,
    through orchestratord and straight from a worker; a file that is not a JSON object is a
    usage error (exit 2, one line)."""
    orchd, worker = fleet
    schema = {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}, "ok": {"type": "boolean"}},
        "required": ["color", "ok"],
    }
    path = tmp_path / "pick.json"
    path.write_text(json.dumps(schema))
    common = ["--prompt", "JSON:", "--max-tokens", "200", "--seed", "7", "--json-schema", str(path)]
    r = llorch("infer", "--model", "llorch-tiny", *common, env=orch_env(orchd))
    assert r.returncode == 0, r.stderr
    jsonschema.validate(json.loads(r.stdout), schema)
    address = worker.url.removeprefix("http://")
    direct = llorch("infer", "--worker", address, "--cluster-token", CLUSTER, *common)
    assert direct.returncode == 0, direct.stderr
    jsonschema.validate(json.loads(direct.stdout), schema)
    path.write_text("[1, 2]")
    bad = llorch("infer", "--model", "llorch-tiny", *common, env=orch_env(orchd))
    assert bad.returncode == 2 and "--json-schema" in bad.stderr
    assert "must hold a JSON object" in bad.stderr
