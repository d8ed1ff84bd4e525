"""llorch-workerd's start-up failures: one line on stderr, exit 2, nothing listening."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest


def workerd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.e2e
def test_every_start_up_failure_is_one_line_and_exit_2(tiny_model: Path, tmp_path: Path) -> None:
    """WRK-003: bad flags, a missing model and a port in use end as `llorch-workerd: error:
    ...` on one line with exit status 2, before anything serves."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        cases = [
            ((), "Missing option '--model'"),
            (("--model", str(tmp_path / "none.gguf")), "model file not found"),
            (("--model", str(tiny_model), "--backend", "tpu"), "--backend must be cpu"),
            (("--model", str(tiny_model), "--slots", "0"), "--slots must be between 1 and 256"),
            (("--model", str(tiny_model), "--port", "x"), "Invalid value for '--port'"),
            (
                ("--model", str(tiny_model), "--port", str(busy)),
                f"cannot listen on 127.0.0.1:{busy}: Address already in use",
            ),
        ]
        for args, words in cases:
            r = workerd(*args)
            assert r.returncode == 2, (args, r.stderr)
            assert r.stderr.startswith("llorch-workerd: error: "), r.stderr
            assert words in r.stderr and r.stderr.count("\n") == 1, r.stderr
            assert r.stdout == ""


@pytest.mark.e2e
def test_wrk_007_names_outside_their_charset_stop_the_worker(
    tiny_model: Path, tmp_path: Path
) -> None:
    """WRK-007, ORCH-045: a worker id, pool or model name orchestratord would refuse stops the
    worker at start with one line naming the flag, exit 2; so does a model name derived from a
    file name that is none."""
    xss = "<img src=x onerror=alert(1)>"
    odd = tmp_path / "my model (1).gguf"
    odd.symlink_to(tiny_model)
    model = ("--model", str(tiny_model))
    cases = [
        ((*model, "--worker-id", xss), "--worker-id "),
        ((*model, "--pool", "a/b"), "--pool 'a/b' must be 1-128 characters"),
        ((*model, "--model-name", xss), "--model-name "),
        (("--model", str(odd)), "--model-name 'my model (1)' (from the file name) must be"),
    ]
    for args, words in cases:
        r = workerd(*args, "--port", "0")
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("llorch-workerd: error: "), r.stderr
        assert words in r.stderr and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.e2e
def test_port_0_serves_on_the_port_the_kernel_chose(tiny_model: Path) -> None:
    """WRK-002: with --port 0 the worker listens where the kernel says and its log names it."""
    p = subprocess.Popen(
        [sys.executable, "-m", "worker", "--model", str(tiny_model), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert p.stdout is not None
        for line in p.stdout:
            if "ready:" in line:
                assert "http://127.0.0.1:0" not in line, line
                break
        else:
            raise AssertionError("the worker never said it was ready")
    finally:
        p.terminate()
        p.wait(timeout=30)
        if p.stdout is not None:
            p.stdout.close()
