"""`llorch infer --model`, `llorch tasks ...`, `llorch workers`: orchestratord through the SDK."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from llorch_ctl.errors import ApiFailed, ConfigError, HttpUnreachable, Interrupted
from llorch_sdk import (
    Client,
    ConnectionFailed,
    Forbidden,
    LlorchError,
    NotFound,
    Submitted,
    Unauthorized,
)

DEFAULT_ORCH_URL = "http://127.0.0.1:8080"
# The flag and variable that give each credential (CTL-090: named in every 401/403 line).
FIX = {
    "api_key": "--api-key or LLORCH_API_KEY",
    "cluster_token": "--cluster-token or LLORCH_CLUSTER_TOKEN",
    "admin_token": "--admin-token or LLORCH_ADMIN_TOKEN",
}


@dataclass(frozen=True)
class OrchSettings:
    url: str
    api_key: str | None
    fix: str = FIX["api_key"]  # what this command takes, said when orchestratord refuses it


def orch_settings(
    url: str | None,
    api_key: str | None,
    inv_url: str | None,
    inv_key: str | None,
    fix: str = FIX["api_key"],
) -> OrchSettings:
    """Flags and LLORCH_ORCHESTRATOR_URL / the credential's env var win over the inventory."""
    chosen = (url or inv_url or DEFAULT_ORCH_URL).rstrip("/")
    if not chosen.startswith(("http://", "https://")):
        raise ConfigError(f"orchestrator URL {chosen!r} must start with http:// or https://")
    return OrchSettings(chosen, api_key or inv_key, fix)


def refused(url: str, what: str, fix: str) -> ApiFailed:
    """A 401/403 as one line that says what this command takes (CTL-090)."""
    return ApiFailed(f"orchestratord {url}: {what}; this command takes {fix}")


@contextlib.contextmanager
def client(s: OrchSettings) -> Iterator[Client]:
    """An SDK client whose failures come out as this CLI's errors."""
    try:
        with Client(s.url, api_key=s.api_key) as c:
            yield c
    except ConnectionFailed as e:
        raise HttpUnreachable(f"cannot reach orchestratord at {s.url}: {e.detail}") from e
    except (Unauthorized, Forbidden) as e:
        raise refused(s.url, str(e), s.fix) from e
    except LlorchError as e:
        raise ApiFailed(f"orchestratord {s.url}: {e}") from e


def infer(
    s: OrchSettings,
    model: str,
    text: Mapping[str, Any],
    params: Mapping[str, Any],
    on_token: Callable[[str], None],
    on_submit: Callable[[Submitted], None] | None = None,
) -> dict[str, Any]:
    """Submit one task (`text` is its `prompt` or `messages`) and stream its tokens; returns the
    `end` event's data. Ctrl-C cancels the task before it exits: nobody reads it any more."""
    with client(s) as c, c.stream(model, **text, **params) as stream:
        try:
            if on_submit is not None:
                on_submit(stream.submitted)
            for ev in stream:
                if ev.event == "token":
                    on_token(str(ev.data.get("t", "")))
                ev.raise_for_error()
                if ev.event == "end":
                    # `failovers`: how often it resumed on another worker (CTL-110)
                    return {"task_id": stream.task_id, "failovers": 0, **ev.data}
        except KeyboardInterrupt:
            stream.close()
            try:
                c.cancel(stream.task_id)
            except LlorchError as e:
                raise Interrupted(
                    f"interrupted; cancelling task {stream.task_id} failed: {e}"
                ) from e
            raise Interrupted(f"interrupted; cancelled task {stream.task_id}") from None
    raise ApiFailed(f"orchestratord {s.url}: the task's stream ended without an end event")


def task_status(s: OrchSettings, task_id: str) -> dict[str, Any]:
    with client(s) as c:
        return c.get(task_id)


def task_cancel(s: OrchSettings, task_id: str) -> str:
    """Cancel and say what became of the task: a finished one is left as it was."""
    with client(s) as c:
        c.cancel(task_id)
        status = c.get(task_id).get("status")
    if status == "cancelled":
        return f"cancelled {task_id}"
    if status in ("succeeded", "failed"):
        return f"task {task_id} had already finished ({status}); nothing to cancel"
    return f"cancelling {task_id} (now {status})"


def list_tasks(
    s: OrchSettings,
    *,
    status: str | None,
    model: str | None,
    tenant: str | None,
    since_ms: int | None,
    limit: int,
    all_pages: bool,
) -> list[dict[str, Any]]:
    """The tasks `GET /v2/tasks` lists, newest first: one page, or every page."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    with client(s) as c:
        while True:
            page = c.list_tasks(
                status=status,
                model=model,
                tenant=tenant,
                since_ms=since_ms,
                limit=limit,
                cursor=cursor,
            )
            out += page.tasks
            cursor = page.next_cursor
            if not all_pages or cursor is None:
                return out


_AGO = re.compile(r"^(\d+)([smhd])$")
_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_since(text: str, *, now_ms: int) -> int:
    """`--since`: `30s`, `15m`, `2h`, `1d` ago, or unix milliseconds; pure (the clock comes in)."""
    if text.isdigit():
        return int(text)
    m = _AGO.match(text.strip())
    if m is None:
        raise ConfigError(f"--since {text!r}: give 30s, 15m, 2h, 1d or unix milliseconds")
    return now_ms - int(m.group(1)) * _UNIT_MS[m.group(2)]


TASK_COLUMNS = ("id", "status", "model", "tenant", "worker", "tokens", "ttft", "age", "reason")


def _age(created_ms: Any, now_ms: int) -> str:
    if not isinstance(created_ms, int):
        return "-"
    s = max(0, (now_ms - created_ms) // 1000)
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def _task_cell(t: Mapping[str, Any], col: str, now_ms: int) -> str:
    value: Any
    if col == "worker":
        value = t.get("worker_id")
    elif col == "tokens":
        value = t.get("tokens_out")
    elif col == "ttft":
        ttft = t.get("ttft_ms")
        value = round(ttft) if isinstance(ttft, int | float) else None
    elif col == "age":
        return _age(t.get("created_ms"), now_ms)
    elif col == "reason":
        value = t.get("error_code") or t.get("stop_reason")
    else:
        value = t.get(col)
    return "-" if value is None else str(value)


def render_tasks(tasks: Sequence[Mapping[str, Any]], now_ms: int | None = None) -> str:
    """Task records (`GET /v2/tasks`) as one table, newest first as they came."""
    if not tasks:
        return "no tasks\n"
    now = int(time.time() * 1000) if now_ms is None else now_ms
    rows = [tuple(c.upper() for c in TASK_COLUMNS)]
    rows += [tuple(_task_cell(t, c, now) for c in TASK_COLUMNS) for t in tasks]
    return _table(rows)


def workers(s: OrchSettings) -> list[dict[str, Any]]:
    with client(s) as c:
        return c.workers()


def remove_worker(s: OrchSettings, worker_id: str) -> str:
    """Remove one worker from the registry; an unknown id is said, not an error (idempotent)."""
    with client(s) as c:
        try:
            c.remove_worker(worker_id)
        except NotFound:
            return f"worker {worker_id} is not registered; nothing to remove"
    return f"removed worker {worker_id} from the registry"


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
    return _table(rows)


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)).rstrip() + "\n" for r in rows
    )
