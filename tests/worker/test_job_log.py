"""The worker logs one line per finished job, as text or as JSON."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from tests.support import spawn_worker

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_one_log_line_per_job(tiny_model: Path, tmp_path: Path, log_format: str) -> None:
    """WRK-064: a finished job leaves one line in the worker's log: `job ID prompt_tokens=N
    tokens=N ttft_ms=... decode_ms=... outcome=REASON`, or with --log-format json one object
    with those keys (every line then is JSON)."""
    with spawn_worker(tiny_model, tmp_path, extra=["--log-format", log_format]) as w:
        body = {"prompt": "hello", "max_tokens": 3, "ignore_eos": True, "job_id": "j-logged"}
        with httpx.stream("POST", w.url + "/execute", json=body, timeout=60) as r:
            assert r.status_code == 200
            text = "".join(r.iter_text())
        assert "event: end" in text
        deadline = time.monotonic() + 10
        while "job j-logged " not in w.log_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = [ln for ln in w.log_text().splitlines() if ln.strip()]
        metrics = httpx.get(w.url + "/metrics", timeout=10).text
    lines = [ln for ln in log if "job j-logged " in ln]
    assert len(lines) == 1, lines
    if log_format == "text":
        assert "tokens=3 " in lines[0] and lines[0].endswith("outcome=MAX_TOKENS")
    else:
        records = [json.loads(ln) for ln in log]  # every line is one object
        line = json.loads(lines[0])
        assert (line["job_id"], line["tokens"], line["outcome"]) == ("j-logged", 3, "MAX_TOKENS")
        assert line["logger"] == "llorch.worker" and len(records) == len(log)
    # One prefix and no `_created` series (README glossary).
    names = {ln.split()[2] for ln in metrics.splitlines() if ln.startswith("# TYPE")}
    assert names and all(n.startswith("llorch_worker_") for n in names), names
    assert "_created" not in metrics
