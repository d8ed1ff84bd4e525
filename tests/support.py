"""Helpers shared by the test suite: free ports, strict-mode requirements, real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

STRICT = os.environ.get("LLORCH_TEST_STRICT") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip when a needed part is missing, or fail when CI asked for strict mode."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"LLORCH_TEST_STRICT=1 and a required part is missing: {reason}")
    pytest.skip(reason)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_http_ready(
    url: str,
    proc: subprocess.Popen[bytes] | None = None,
    timeout: float = 30.0,
    ready: str | None = None,
) -> None:
    """Poll `url` until it answers 200 (and `status == ready` when given)."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} was ready")
        try:
            r = httpx.get(url, timeout=2.0)
            if r.status_code == 200 and (ready is None or r.json().get("status") == ready):
                return
            last = r.status_code
        except httpx.HTTPError as e:
            last = e
        time.sleep(0.05)
    raise TimeoutError(f"{url} not ready after {timeout}s (last: {last!r})")


@dataclass
class Proc:
    """A real child process serving HTTP on a loopback port."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)


@contextlib.contextmanager
def spawn(
    args: Sequence[str],
    port: int,
    log: Path,
    health: str,
    *,
    ready: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 30.0,
    host: str = "127.0.0.1",
) -> Iterator[Proc]:
    """Start `python -m <args>`, wait for `health` to answer, and stop it afterwards."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
        )
    p = Proc(proc, port, log, host)
    try:
        try:
            wait_http_ready(p.url + health, proc, timeout=timeout, ready=ready)
        except Exception as e:
            raise RuntimeError(f"{e}\n--- log ---\n{p.log_text()[-3000:]}") from e
        yield p
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


@contextlib.contextmanager
def spawn_worker(
    model: Path,
    tmp: Path,
    *,
    slots: int = 1,
    token: str | None = None,
    extra: Sequence[str] = (),
    port: int | None = None,
) -> Iterator[Proc]:
    """A real llorch-workerd process on a free loopback port serving `model`."""
    port = port or free_port()
    args = ["worker", "--model", str(model), "--port", str(port), "--slots", str(slots)]
    if token:
        args += ["--cluster-token", token]
    args += list(extra)
    with spawn(args, port, tmp / f"worker-{port}.log", "/health", ready="ready") as p:
        yield p
