"""orchestratord's log output: text or JSON lines (`--log-format`), and the one line per task.

Every finished task is logged once, by `task_line`, with what an operator greps for: id,
tenant, model, worker, time queued, time to first token, tokens and outcome. In JSON each
line is one object, and the task's fields are top-level keys.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any

TASK_LOG = logging.getLogger("llorch.orchestrator.task")
_FIELDS = "fields"  # the `extra` key that carries a line's structured fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and the line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, _FIELDS, None)
        if isinstance(fields, Mapping):
            out.update(fields)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure(level: str, fmt: str) -> None:
    """Install the root handler once, at start-up (uvicorn's own loggers included)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per cancel otherwise


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


def task_line(record: Mapping[str, Any]) -> None:
    """Log one finished task: `task ID tenant=... model=... ... outcome=...`."""
    fields = task_fields(record)
    text = " ".join(f"{k}={_text(v)}" for k, v in fields.items() if k != "task_id")
    TASK_LOG.info("task %s %s", fields["task_id"], text, extra={_FIELDS: fields})


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)
