"""The worker refuses an oversized body before reading it whole (ORCH-155, shared/limits.py)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from shared.limits import MAX_BODY_BYTES
from tests.support import Proc
from tests.worker.conftest import TOKEN

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(0, total, 65536):
        yield b" " * 65536


def test_orch_155_worker_refuses_bodies_over_the_cap_with_413(worker: Proc) -> None:
    big = b'{"prompt": "' + b"x" * (MAX_BODY_BYTES + 1) + b'", "max_tokens": 1}'
    r = httpx.post(worker.url + "/execute", content=big, headers=AUTH, timeout=30)
    assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"
    r = httpx.post(
        worker.url + "/execute",
        content=_chunks(MAX_BODY_BYTES + 65536),
        headers=AUTH,
        timeout=30,
    )
    assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"
    ok = httpx.post(
        worker.url + "/execute",
        json={"prompt": "hello", "max_tokens": 2, "job_id": "after-413"},
        headers=AUTH,
        timeout=30,
    )
    assert ok.status_code == 200
