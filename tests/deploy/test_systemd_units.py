"""examples/systemd/: the units name real programs and settings, and their environment files,
as written (ports, paths and hosts moved into a temp dir), start a working fleet."""

from __future__ import annotations

import configparser
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llorch_sdk import Client
from tests.support import free_port, wait_http_ready

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "examples" / "systemd"
MODULES = {"orchestratord": "orchestratord", "llorch-workerd": "worker", "llorch": "llorch_ctl"}
ENV_FILES = {
    "orchestratord.service": "orchestratord.env",
    "llorch-workerd@.service": "worker.env",
    "llorch-fleet-apply.service": "fleet-apply.env",
}


def unit(name: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNITS / name)
    return parser


def env_file(name: str) -> dict[str, str]:
    out = {}
    for line in (UNITS / name).read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def program(unit_name: str) -> str:
    exec_start = unit(unit_name)["Service"]["ExecStart"].split()
    return exec_start[0].rsplit("/", 1)[-1]


def help_text(prog: str, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, "-m", MODULES[prog], *args, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert r.returncode == 0, r.stderr
    return " ".join(r.stdout.split())


def test_units_name_real_programs_and_settings() -> None:
    """OPS-002, CTL-103: each unit runs one of the daemons, or `llorch fleet apply --watch`,
    from its environment file, whose every variable the program reads; start-up failures
    (exit 2) are not restarted."""
    assert sorted(p.name for p in UNITS.glob("*.service")) == sorted(ENV_FILES)
    for name, env_name in ENV_FILES.items():
        service = unit(name)["Service"]
        prog = program(name)
        assert prog in MODULES and "2" in service["RestartPreventExitStatus"].split()
        assert service["EnvironmentFile"].rsplit("/", 1)[-1].replace("%i", "NAME") in (
            "orchestratord.env",
            "worker-NAME.env",
            "fleet-apply.env",
        )
        args = service["ExecStart"].split()[1:]
        text = help_text(prog, *[a for a in args if not a.startswith("--")])
        if prog == "llorch":
            assert args == ["fleet", "apply", "--watch"] and "--watch" in text
            text += " " + help_text(prog)  # LLORCH_CONFIG is the CLI's, before the command
        for var in env_file(env_name):
            assert f"[env var: {var}" in text, (name, var)


@pytest.mark.e2e
def test_the_environment_files_start_a_fleet(tmp_path: Path, tiny_model: Path) -> None:
    """OPS-002: orchestratord and a worker started as the units start them (the ExecStart
    program, settings only from the environment file) register and serve a streamed task."""
    orch_env = env_file("orchestratord.env")
    orch_port, worker_port = free_port(), free_port()
    orch_env.update(LLORCH_PORT=str(orch_port), LLORCH_STATE_DIR=str(tmp_path / "state"))
    worker_env = env_file("worker.env")
    worker_env.update(
        LLORCH_WORKER_MODEL=str(tiny_model),
        LLORCH_WORKER_PORT=str(worker_port),
        LLORCH_WORKER_ADVERTISE_URL=f"http://127.0.0.1:{worker_port}",
        LLORCH_ORCHESTRATOR_URL=f"http://127.0.0.1:{orch_port}",
    )
    base = {k: v for k, v in os.environ.items() if not k.startswith("LLORCH_")}
    procs = []
    try:
        for unit_name, env in (
            ("orchestratord.service", orch_env),
            ("llorch-workerd@.service", worker_env),
        ):
            with (tmp_path / f"{unit_name}.log").open("w") as log:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", MODULES[program(unit_name)]],
                        env={**base, **env, "PYTHONUNBUFFERED": "1"},
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        orch_url = f"http://127.0.0.1:{orch_port}"
        wait_http_ready(orch_url + "/health", procs[0])
        tenant, _, key = orch_env["LLORCH_API_KEYS"].partition(":")
        with Client(orch_url, api_key=key) as client:
            deadline = time.monotonic() + 60
            while not client.capabilities()["models"]:
                assert time.monotonic() < deadline, (
                    tmp_path / "llorch-workerd@.service.log"
                ).read_text()
                time.sleep(0.1)
            stream = client.stream(client.capabilities()["models"][0], prompt="hi", max_tokens=3)
            assert stream.text() and client.get(stream.task_id)["tenant"] == tenant
        health = httpx.get(f"http://127.0.0.1:{worker_port}/health").json()
        assert health["worker_id"] == worker_env["LLORCH_WORKER_WORKER_ID"]
        assert health["slots_total"] == int(worker_env["LLORCH_WORKER_SLOTS"])
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
    # uvicorn ends a SIGTERMed server by re-raising the signal, which systemd counts as success.
    assert all(p.returncode in (0, -signal.SIGTERM) for p in procs), [p.returncode for p in procs]
