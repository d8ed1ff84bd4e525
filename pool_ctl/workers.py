"""`worker list|stop|cleanup|logs`: the workers this host started, by their records.

`cleanup_action` is the pure decision; the functions around it gather the facts (process
identity from /proc, the worker's /health) and carry it out.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from pool_ctl import procs
from pool_ctl.errors import InvalidInput, NotFound
from pool_ctl.health import fetch
from pool_ctl.records import Records, WorkerRecord, check_worker_id
from pool_ctl.settings import Settings

STOP_GRACE_S = 10.0
CLEANUP_GRACE_S = 120.0

Action = Literal["keep", "remove-gone", "remove-reused", "mark-unhealthy", "stop-unhealthy"]


def cleanup_action(
    identity: procs.Identity,
    status: str | None,
    unhealthy_since: float | None,
    started_at: float,
    now: float,
    grace: float,
) -> tuple[Action, float | None]:
    """What cleanup does with one record, and the record's new `unhealthy_since`.

    A worker counts as healthy while ready or draining; loading counts from its start (a load
    that takes longer than the grace period is stuck); no answer or "failed" from the first time
    cleanup saw it.
    """
    if identity == "gone":
        return "remove-gone", None
    if identity == "reused":
        return "remove-reused", None
    if status in ("ready", "draining"):
        return "keep", None
    since = (
        unhealthy_since
        if unhealthy_since is not None
        else (started_at if status == "loading" else now)
    )
    if now - since >= grace:
        return "stop-unhealthy", since
    return "mark-unhealthy", since


# What orchestratord's registry says overrides a worker's own `ready` (POOL-101): the worker
# does not know orchestratord drained it.
REGISTRY_STATES = frozenset({"draining", "drained"})


@dataclass(frozen=True)
class Live:
    record: WorkerRecord
    identity: procs.Identity
    health: dict[str, Any] | None
    registry: str | None = None  # the worker's state in orchestratord's registry, if asked

    @property
    def state(self) -> str:
        if self.identity == "gone":
            return "exited"
        if self.identity == "reused":
            return "pid-reused"
        if not self.health:
            return "unreachable"
        status = str(self.health["status"])
        if status == "ready" and self.registry in REGISTRY_STATES:
            return self.registry
        return status


def _live(record: WorkerRecord, registry: dict[str, str] | None = None) -> Live:
    who = procs.identify(record["pid"], record["start_time"], record["cmdline"])
    health = fetch(record["url"], timeout=1.0) if who == "ours" else None
    return Live(record, who, health, (registry or {}).get(record["worker_id"]))


def registry_states(records: list[WorkerRecord], timeout: float = 1.0) -> dict[str, str]:
    """worker id -> state, from each orchestratord the records name (one GET /v2/workers each,
    with the record's cluster token). An orchestratord that does not answer says nothing."""
    out: dict[str, str] = {}
    asked: set[tuple[str, str | None]] = set()
    for r in records:
        key = (r["orchestrator"] or "", r["token"])
        if not key[0] or key in asked:
            continue
        asked.add(key)
        headers = {"Authorization": f"Bearer {key[1]}"} if key[1] else {}
        try:
            got = httpx.get(f"{key[0].rstrip('/')}/v2/workers", headers=headers, timeout=timeout)
            listed = got.json().get("workers", []) if got.status_code == 200 else []
        except (httpx.HTTPError, ValueError, AttributeError):
            continue
        for w in listed if isinstance(listed, list) else []:
            if isinstance(w, dict) and isinstance(w.get("id"), str):
                out.setdefault(w["id"], str(w.get("state")))
    return out


def list_workers(settings: Settings) -> list[Live]:
    records = Records(settings.layout).all()
    registry = registry_states(records)
    return [_live(r, registry) for r in records]


def threads_in_use(live: list[Live]) -> int:
    """Decode threads of the running workers whose records say (POOL-100)."""
    return sum(w.record.get("threads", 0) for w in live if w.identity == "ours")


def deregister(record: WorkerRecord, process: str = "gone") -> str:
    """Tell orchestratord the worker is gone; a description of the outcome, never an error.

    `process` is what happened to the worker's process: one that `terminated` on SIGTERM
    deregistered itself on its way out, so orchestratord no longer knowing it is success.
    """
    if not record["orchestrator"]:
        return "no orchestrator"
    url = f"{record['orchestrator'].rstrip('/')}/v2/workers/{record['worker_id']}"
    headers = {"Authorization": f"Bearer {record['token']}"} if record["token"] else {}
    try:
        r = httpx.delete(url, headers=headers, timeout=5.0)
    except httpx.HTTPError as e:
        return f"orchestrator unreachable ({type(e).__name__})"
    if r.status_code in (200, 202, 204):
        return "deregistered"
    if r.status_code == 404:
        return "deregistered by the worker" if process == "terminated" else "not registered"
    return f"orchestrator answered HTTP {r.status_code}"


def _stop_record(records: Records, record: WorkerRecord, grace: float) -> dict[str, str]:
    outcome = procs.terminate(record["pid"], record["start_time"], record["cmdline"], grace)
    orchestrator = deregister(record, outcome)
    records.remove(record["worker_id"])
    return {"worker_id": record["worker_id"], "process": outcome, "orchestrator": orchestrator}


def stop(
    settings: Settings,
    worker_id: str | None,
    *,
    all_workers: bool = False,
    grace: float = STOP_GRACE_S,
) -> list[dict[str, str]]:
    """SIGTERM, wait `grace`, SIGKILL; deregister; remove the record. Other pids are left alone."""
    records = Records(settings.layout)
    if all_workers == (worker_id is not None):
        raise InvalidInput(
            "give a worker id or --all, not both or neither",
            "e.g. 'llorch-pool worker stop myhost-8001'",
        )
    targets = records.all() if all_workers else [records.load(worker_id or "")]
    return [_stop_record(records, r, grace) for r in targets]


def cleanup(
    settings: Settings,
    *,
    grace: float = CLEANUP_GRACE_S,
    stop_grace: float = STOP_GRACE_S,
    now: Callable[[], float] = time.time,
) -> list[dict[str, Any]]:
    """Tidy every record; one line per record saying what was found and done."""
    records = Records(settings.layout)
    report: list[dict[str, Any]] = []
    for record in records.all():
        live = _live(record)
        status = live.health["status"] if live.health else None
        t = now()
        action, since = cleanup_action(
            live.identity, status, record.get("unhealthy_since"), record["started_at"], t, grace
        )
        item: dict[str, Any] = {
            "worker_id": record["worker_id"],
            "pid": record["pid"],
            "state": live.state,
            "action": action,
        }
        if action in ("remove-gone", "remove-reused"):
            # A reused pid belongs to someone else now: drop the record, never signal it.
            # A dead worker never deregistered itself: orchestratord would list it until its
            # heartbeats are declared dead, so cleanup removes it from the registry too.
            item["orchestrator"] = deregister(record)
            records.remove(record["worker_id"])
        elif action == "stop-unhealthy":
            item["unhealthy_for_s"] = round(t - (since or t), 1)
            item.update(_stop_record(records, record, stop_grace))
            item["action"] = action
        elif action == "mark-unhealthy":
            item["unhealthy_for_s"] = round(t - (since or t), 1)
            item["stops_after_s"] = grace
            if record.get("unhealthy_since") != since:
                record["unhealthy_since"] = since
                records.save(record)
        elif record.get("unhealthy_since") is not None:
            record["unhealthy_since"] = None
            records.save(record)
        report.append(item)
    return report


def log_path(settings: Settings, worker_id: str) -> Path:
    layout = settings.layout
    records = Records(layout)
    if records.exists(worker_id):
        return Path(records.load(worker_id)["log_path"])
    path = layout.worker_log(check_worker_id(worker_id))
    if not path.exists():
        raise NotFound(
            f"no worker {worker_id!r} and no log for it", "run 'llorch-pool worker list'"
        )
    return path


def tail(path: Path, lines: int) -> tuple[str, int]:
    """The last `lines` lines of the log, and the offset they end at (where `follow` starts)."""
    with path.open("rb") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        # Read back far enough for `lines` lines of a normal log, not the whole file.
        f.seek(max(0, size - max(64 * 1024, lines * 512)))
        data = f.read(size - f.tell())
    text = data.decode(errors="replace")
    kept = text.splitlines(keepends=True)[-lines:] if lines > 0 else []
    return "".join(kept), size


def follow(
    settings: Settings, worker_id: str, path: Path, offset: int, poll: float = 0.2
) -> Iterator[str]:
    """Text appended to the log after `offset`, until the worker's process is gone."""
    records = Records(settings.layout)
    record = records.load(worker_id) if records.exists(worker_id) else None

    def alive() -> bool:
        if record is None:
            return False
        return procs.identify(record["pid"], record["start_time"], record["cmdline"]) == "ours"

    with path.open("rb") as f:
        f.seek(offset)
        while True:
            running = alive()
            # Read after the check, so what it wrote just before exiting is still printed.
            chunk = f.read()
            if chunk:
                yield chunk.decode(errors="replace")
            elif not running:
                return
            else:
                time.sleep(poll)
