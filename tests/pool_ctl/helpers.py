"""Running llorch-pool for real in tests: as a subprocess, or through its entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pool_ctl.cli import main
from pool_ctl.records import WorkerRecord


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


def pool_env(home: Path, hub_url: str | None = None, **extra: str) -> dict[str, str]:
    """The environment of a llorch-pool run: its own home, HF cache and (maybe) hub."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("HF_", "LLORCH_")) or k == "LLORCH_TEST_STRICT"
    }
    env.update(
        LLORCH_HOME=str(home),
        HF_HOME=str(home.parent / "hf-home"),
        HF_HUB_DISABLE_TELEMETRY="1",
        PYTHONUNBUFFERED="1",
    )
    if hub_url:
        env["HF_ENDPOINT"] = hub_url
    env.update(extra)
    return env


def run_pool(args: list[str], env: dict[str, str], timeout: float = 90.0) -> Result:
    """`python -m pool_ctl ARGS` in a child process."""
    p = subprocess.run(
        [sys.executable, "-m", "pool_ctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(p.returncode, p.stdout, p.stderr)


def start_pool(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pool_ctl", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def call(args: list[str], capsys: pytest.CaptureFixture[str]) -> Result:
    """The CLI's entry point in this process (fast; for commands that start no worker)."""
    capsys.readouterr()
    try:
        main(args)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    else:
        code = 0
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def worker_record(pid: int, start_time: int, cmdline: list[str], **over: Any) -> WorkerRecord:
    """A worker record for process `pid` as llorch-pool writes one; what a test does not care
    about is filled in (no orchestrator, nothing listening at its URL)."""
    record = WorkerRecord(
        worker_id="w1",
        pid=pid,
        start_time=start_time,
        cmdline=cmdline,
        host="127.0.0.1",
        port=1,
        url="http://127.0.0.1:1",
        model="m",
        model_path="m.gguf",
        backend="cpu",
        slots=1,
        log_path="/dev/null",
        orchestrator=None,
        token=None,
        started_at=time.time(),
        unhealthy_since=None,
    )
    record.update(over)  # type: ignore[typeddict-item]
    return record
