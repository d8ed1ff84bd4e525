"""Log output of both daemons: text or JSON lines (`--log-format`).

A line's structured fields travel in `extra={FIELDS: {...}}`; in JSON they are top-level keys
beside `ts`, `level`, `logger` and `msg`, in text the message already says them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

FIELDS = "fields"  # the `extra` key that carries a line's structured fields


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, and the line's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, FIELDS, None)
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
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
