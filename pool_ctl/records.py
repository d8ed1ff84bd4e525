"""Worker records: workers/<id>.json, one per worker this host started.

A record names the process by pid AND its start time and command line, so a pid the kernel has
since given to another program is recognised as such (see procs.py). Records hold the cluster
token, so they are written mode 0600.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NotRequired, TypedDict

from pool_ctl import jsonfile
from pool_ctl.errors import InvalidInput, NotFound
from pool_ctl.settings import Layout
from shared.names import POOL_NAME, WORKER_ID


class WorkerRecord(TypedDict):
    worker_id: str
    pid: int
    start_time: int  # clock ticks after boot, /proc/<pid>/stat field 22
    cmdline: list[str]
    host: str
    port: int
    url: str
    model: str
    model_path: str
    backend: str
    slots: int
    log_path: str
    orchestrator: str | None
    token: str | None
    started_at: float  # wall clock, seconds since the epoch
    unhealthy_since: float | None
    # POOL-100: the worker's decode threads and why (absent in records written before them).
    threads: NotRequired[int]
    threads_rule: NotRequired[str]


def check_worker_id(worker_id: str) -> str:
    if not WORKER_ID.matches(worker_id):
        raise InvalidInput(f"worker id {worker_id!r} is not valid", f"use {WORKER_ID.rule}")
    return worker_id


def check_pool_name(pool: str) -> str:
    """The `--pool` a worker reports (POOL-043): refused here, before anything starts."""
    if not POOL_NAME.matches(pool):
        raise InvalidInput(f"pool name {pool!r} is not valid", f"use {POOL_NAME.rule}")
    return pool


def public(record: WorkerRecord) -> dict[str, object]:
    """The record as printed: the token is a secret and never leaves the file."""
    shown: dict[str, object] = {k: v for k, v in record.items() if k != "token"}
    shown["has_token"] = record["token"] is not None
    return shown


class Records:
    def __init__(self, layout: Layout) -> None:
        self.layout = layout

    def path(self, worker_id: str) -> Path:
        return self.layout.worker_record(check_worker_id(worker_id))

    def exists(self, worker_id: str) -> bool:
        return self.path(worker_id).exists()

    def load(self, worker_id: str) -> WorkerRecord:
        try:
            data = jsonfile.read(self.path(worker_id))
        except json.JSONDecodeError as e:
            raise InvalidInput(
                f"worker record {self.path(worker_id)} is not valid JSON",
                "remove the file by hand after checking the process it names",
            ) from e
        if data is None:
            raise NotFound(f"no worker {worker_id!r} on this host", "run 'llorch-pool worker list'")
        record: WorkerRecord = data
        return record

    def all(self) -> list[WorkerRecord]:
        if not self.layout.workers.is_dir():
            return []
        out: list[WorkerRecord] = []
        for p in sorted(self.layout.workers.glob("*.json")):
            try:
                data = jsonfile.read(p)
            except json.JSONDecodeError:
                continue  # a hand-edited file; `worker list` must still work
            if isinstance(data, dict) and "worker_id" in data and "pid" in data:
                out.append(data)  # type: ignore[arg-type]
        return out

    def save(self, record: WorkerRecord) -> None:
        jsonfile.write_atomic(self.path(record["worker_id"]), record, mode=0o600)

    def remove(self, worker_id: str) -> None:
        self.path(worker_id).unlink(missing_ok=True)
