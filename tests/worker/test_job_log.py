"""The worker logs one line per finished job."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.support import spawn_worker

pytestmark = pytest.mark.e2e


def test_one_log_line_per_job(tiny_model: Path, tmp_path: Path) -> None:
    """WRK-090: a finished job leaves `job ID prompt_tokens=N tokens=N ttft_ms=... decode_ms=...
    outcome=REASON` in the worker's log, once."""
    with spawn_worker(tiny_model, tmp_path) as w:
        body = {"prompt": "hello", "max_tokens": 3, "ignore_eos": True, "job_id": "j-logged"}
        with httpx.stream("POST", w.url + "/execute", json=body, timeout=60) as r:
            assert r.status_code == 200
            text = "".join(r.iter_text())
        assert "event: end" in text
        deadline = time.monotonic() + 10
        while "job j-logged " not in w.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        lines = [ln for ln in w.log_text().splitlines() if "job j-logged " in ln]
    assert len(lines) == 1, lines
    assert "tokens=3 " in lines[0] and lines[0].endswith("outcome=MAX_TOKENS")
