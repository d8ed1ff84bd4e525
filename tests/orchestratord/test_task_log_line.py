"""orchestratord's one line per finished task (orchestratord/logs.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from orchestratord import logs

RECORD = {
    "id": "t1",
    "tenant": "acme",
    "model": "m",
    "worker_id": "w1",
    "created_ms": 1_000,
    "started_ms": 1_250,
    "finished_ms": 2_000,
    "ttft_ms": 40.0,
    "tokens_out": 7,
    "status": "succeeded",
    "stop_reason": "MAX_TOKENS",
}


def test_the_line_names_what_an_operator_greps_for(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=logs.TASK_LOG.name):
        logs.task_line(lambda: RECORD)
    [rec] = caplog.records
    assert rec.getMessage() == (
        "task t1 tenant=acme model=m worker=w1 queue_ms=250 ttft_ms=40.0 tokens=7 "
        "outcome=succeeded reason=MAX_TOKENS"
    )


def test_no_line_is_built_when_info_is_off(caplog: pytest.LogCaptureFixture) -> None:
    """At `--log-level warning` the record is not even read: nothing is built per task."""
    asked: list[int] = []

    def record() -> dict[str, Any]:
        asked.append(1)
        return RECORD

    with caplog.at_level(logging.WARNING, logger=logs.TASK_LOG.name):
        logs.task_line(record)
    assert asked == [] and caplog.records == []
