"""`llorch infer --model`, `llorch tasks ...`, `llorch workers`: orchestratord through the SDK."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llorch_ctl.errors import ApiFailed, ConfigError, HttpUnreachable
from llorch_sdk import Client, ConnectionFailed, LlorchError

DEFAULT_ORCH_URL = "http://127.0.0.1:8080"


@dataclass(frozen=True)
class OrchSettings:
    url: str
    api_key: str | None


def orch_settings(
    url: str | None, api_key: str | None, inv_url: str | None, inv_key: str | None
) -> OrchSettings:
    """Flags and LLORCH_ORCH_URL / LLORCH_API_KEY win over the inventory's [orchestrator]."""
    chosen = (url or inv_url or DEFAULT_ORCH_URL).rstrip("/")
    if not chosen.startswith(("http://", "https://")):
        raise ConfigError(f"orchestrator URL {chosen!r} must start with http:// or https://")
    return OrchSettings(chosen, api_key or inv_key)


@contextlib.contextmanager
def client(s: OrchSettings) -> Iterator[Client]:
    """An SDK client whose failures come out as this CLI's errors."""
    try:
        with Client(s.url, api_key=s.api_key) as c:
            yield c
    except ConnectionFailed as e:
        raise HttpUnreachable(f"cannot reach orchestratord at {s.url}: {e.detail}") from e
    except LlorchError as e:
        raise ApiFailed(f"orchestratord {s.url}: {e}") from e


def infer(
    s: OrchSettings,
    model: str,
    prompt: str,
    params: Mapping[str, Any],
    on_token: Callable[[str], None],
) -> dict[str, Any]:
    """Submit one task and stream its tokens; returns the `end` event's data."""
    with client(s) as c, c.stream(model, prompt=prompt, **params) as stream:
        for ev in stream:
            if ev.event == "token":
                on_token(str(ev.data.get("t", "")))
            ev.raise_for_error()
            if ev.event == "end":
                return {"task_id": stream.task_id, **ev.data}
    raise ApiFailed(f"orchestratord {s.url}: the task's stream ended without an end event")


def task_status(s: OrchSettings, task_id: str) -> dict[str, Any]:
    with client(s) as c:
        return c.get(task_id)


def task_cancel(s: OrchSettings, task_id: str) -> None:
    with client(s) as c:
        c.cancel(task_id)


def workers(s: OrchSettings) -> list[dict[str, Any]]:
    with client(s) as c:
        return c.workers()


WORKER_COLUMNS = ("id", "pool", "model", "backend", "state", "slots", "tok/s", "url")


def _cell(w: Mapping[str, Any], col: str) -> str:
    if col == "slots":
        return f"{w.get('slots_busy', '?')}/{w.get('slots_total', '?')}"
    if col == "tok/s":
        return str(w.get("tokens_per_s", "-"))
    value = w.get(col)
    return "-" if value is None else str(value)


def render_workers(ws: Sequence[Mapping[str, Any]]) -> str:
    """orchestratord's registry (`GET /v2/workers` views) as one table."""
    rows = [tuple(c.upper() for c in WORKER_COLUMNS)]
    rows += [tuple(_cell(w, c) for c in WORKER_COLUMNS) for w in ws]
    widths = [max(len(r[i]) for r in rows) for i in range(len(WORKER_COLUMNS))]
    return "".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() + "\n" for r in rows
    )
