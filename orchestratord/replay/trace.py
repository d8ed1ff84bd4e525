"""A recorded trace: the tasks and workers orchestratord's database kept (FLT-051).

Read-only: the database is opened with SQLite's `mode=ro` (or as given for another URL) and
never upgraded, so a replay can run against a live daemon's file. Columns a schema version
does not have take their defaults (prompt_tokens: 0).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from orchestratord.domain.tasks import Priority


@dataclass(frozen=True, slots=True)
class RecordedTask:
    id: str
    model: str
    priority: Priority
    tenant: str | None
    session_id: str | None
    arrival_ms: int
    prompt_tokens: int
    max_tokens: int
    service_ms: int  # measured: finished - started, or estimated (see load_trace)


@dataclass(frozen=True, slots=True)
class RecordedWorker:
    id: str
    model: str
    pool: str
    backend: str
    slots: int
    tokens_per_s: float


@dataclass(frozen=True, slots=True)
class Trace:
    tasks: tuple[RecordedTask, ...]
    workers: tuple[RecordedWorker, ...]
    estimated: int  # tasks that never ran: service time estimated from their model's
    skipped: int  # tasks with no measured or estimable service time (no task of theirs ran)


def db_url(db: str) -> str:
    """A path becomes a read-only SQLite URL; a URL is used as given."""
    if "://" in db:
        return db
    path = Path(db)
    if not path.is_file():
        raise FileNotFoundError(f"no database file {db}")
    return f"sqlite:///file:{path.resolve()}?mode=ro&uri=true"


_TASK_COLUMNS = (
    "id", "model", "priority", "tenant", "session_id", "created_ms", "started_ms",
    "finished_ms", "tokens_out", "max_tokens", "prompt_tokens", "worker_id",
)  # fmt: skip
_WORKER_COLUMNS = ("id", "model", "pool", "backend", "slots_total")


def _rows(conn: sa.Connection, name: str, wanted: tuple[str, ...]) -> list[dict[str, Any]]:
    """The wanted columns of a table that has them (an older schema lacks some), as dicts."""
    if not sa.inspect(conn).has_table(name):
        return []
    table = sa.Table(name, sa.MetaData(), autoload_with=conn)
    cols = [table.c[c] for c in wanted if c in table.c]
    keys = [c.name for c in cols]
    return [dict(zip(keys, row, strict=True)) for row in conn.execute(sa.select(*cols))]


def load_trace(db: str) -> Trace:
    """Read the recorded tasks (in arrival order) and the recorded fleet.

    Service time is what the task measured from start to finish. A task that never started
    (cancelled or expired in the queue) is replayed with its model's median time per output
    token times its max_tokens; when no task of its model ran, it is skipped and counted.
    The fleet is the workers table plus any worker a task ran on that is no longer there
    (1 slot); each worker's speed is the median of its tasks' tokens per second.
    """
    engine = sa.create_engine(db_url(db))
    try:
        with engine.connect() as conn:
            task_rows = _rows(conn, "tasks", _TASK_COLUMNS)
            worker_rows = _rows(conn, "workers", _WORKER_COLUMNS)
    finally:
        engine.dispose()
    per_token: dict[str, list[float]] = {}
    speeds: dict[str, list[float]] = {}
    for r in task_rows:
        started, finished, out = r.get("started_ms"), r.get("finished_ms"), r.get("tokens_out") or 0
        if started is not None and finished is not None and finished >= started:
            ms = finished - started
            per_token.setdefault(r["model"], []).append(ms / max(1, out))
            if r.get("worker_id") and out > 0 and ms > 0:
                speeds.setdefault(r["worker_id"], []).append(out * 1000 / ms)
    ms_per_token = {m: statistics.median(v) for m, v in per_token.items()}
    tasks: list[RecordedTask] = []
    estimated = skipped = 0
    for r in sorted(task_rows, key=lambda r: (r["created_ms"], r["id"])):
        started, finished = r.get("started_ms"), r.get("finished_ms")
        max_tokens = int(r.get("max_tokens") or 128)
        if started is not None and finished is not None and finished >= started:
            service = int(finished - started)
        elif r["model"] in ms_per_token:
            service = max(1, round(ms_per_token[r["model"]] * max_tokens))
            estimated += 1
        else:
            skipped += 1
            continue
        priority: Priority = "batch" if r["priority"] == "batch" else "interactive"
        tasks.append(
            RecordedTask(
                id=r["id"],
                model=r["model"],
                priority=priority,
                tenant=r.get("tenant"),
                session_id=r.get("session_id"),
                arrival_ms=int(r["created_ms"]),
                prompt_tokens=int(r.get("prompt_tokens") or 0),
                max_tokens=max_tokens,
                service_ms=service,
            )
        )
    workers: dict[str, RecordedWorker] = {}
    for r in sorted(worker_rows, key=lambda r: r["id"]):
        workers[r["id"]] = RecordedWorker(
            r["id"],
            r["model"],
            r["pool"],
            r["backend"],
            max(1, int(r["slots_total"])),
            statistics.median(speeds.get(r["id"], [0.0])),
        )
    for r in task_rows:
        wid = r.get("worker_id")
        if wid and wid not in workers:
            workers[wid] = RecordedWorker(
                wid, r["model"], "recorded", "cpu", 1, statistics.median(speeds.get(wid, [0.0]))
            )
    ordered = tuple(workers[k] for k in sorted(workers))
    return Trace(tuple(tasks), ordered, estimated, skipped)
