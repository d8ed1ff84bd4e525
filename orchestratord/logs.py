"""orchestratord's one log line per task (the output itself, text or JSON, is shared/logs.py).

Every finished task is logged once, by `task_line`, with what an operator greps for: id,
tenant, model, worker, time queued, time to first token, tokens and outcome. In JSON each
line is one object, and the task's fields are top-level keys.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from shared.logs import FIELDS

TASK_LOG = logging.getLogger("llorch.orchestrator.task")


def task_fields(record: Mapping[str, Any], now_ms: int | None = None) -> dict[str, Any]:
    """The fields of a finished task's line, from its record (`GET /v2/tasks/{id}`)."""
    created, started = record.get("created_ms"), record.get("started_ms")
    finished = record.get("finished_ms") or now_ms or int(time.time() * 1000)
    queue_ms = (
        (started if isinstance(started, int) else finished) - created
        if isinstance(created, int)
        else None
    )
    return {
        "task_id": record.get("id"),
        "tenant": record.get("tenant"),
        "model": record.get("model"),
        "worker": record.get("worker_id"),
        "queue_ms": queue_ms,
        "ttft_ms": record.get("ttft_ms"),
        "tokens": record.get("tokens_out"),
        "outcome": record.get("status"),
        "reason": record.get("error_code") or record.get("stop_reason"),
    }


def task_line(record: Callable[[], Mapping[str, Any]]) -> None:
    """Log one finished task: `task ID tenant=... model=... ... outcome=...`. `record` gives
    the task's record; it is not called when the line would not be written."""
    if not TASK_LOG.isEnabledFor(logging.INFO):  # e.g. `--log-level warning`
        return
    fields = task_fields(record())
    text = " ".join(f"{k}={_text(v)}" for k, v in fields.items() if k != "task_id")
    TASK_LOG.info("task %s %s", fields["task_id"], text, extra={FIELDS: fields})


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
