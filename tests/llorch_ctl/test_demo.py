"""`make demo` runs llorch_ctl.demo: the whole local flow must work and leave nothing behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e


def test_demo_streams_a_task_through_a_local_pool_and_cleans_up(tiny_model: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llorch_ctl.demo", "--model", str(tiny_model), "--max-tokens", "24"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "llorch-pool spawned worker demo-worker" in done.stderr
    assert "running on demo-worker" in done.stderr
    assert "done: 24 tokens, stop MAX_TOKENS" in done.stderr
    assert "clean shutdown: no process left behind" in done.stderr
    assert done.stdout.strip(), "the tokens are printed on stdout"


def test_demo_on_smollm2_answers_in_english(smollm2_model: Path) -> None:
    """WRK-120: `make demo` (the default) asks SmolLM2 a question and streams a real answer."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "llorch_ctl.demo",
            "--model",
            "smollm2",
            "--cache",
            str(smollm2_model.parent),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "Paris" in done.stdout
    assert "clean shutdown: no process left behind" in done.stderr
