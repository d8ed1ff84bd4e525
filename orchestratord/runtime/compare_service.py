"""Compare runs, the async side: submit one pinned task per target, save the run when all
ended, answer reads (ORCH-210..153). Lives in the lifespan state as `request.state.compare`.

    run = await compare.start(body, tenant=..., admin=...)   # InvalidParams, QueueFull, ...
    compare.get(run_id, tenant=..., admin=...)                # NotFound for another tenant's
    await compare.wait(run_id, wait_ms)                       # until done or the time passed
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from orchestratord.domain.compare import MAX_TARGETS, CompareRun, Target, job_of, parse_targets
from orchestratord.domain.tasks import TaskRecord, TaskRequest, parse_task_request
from orchestratord.domain.tenancy import Caller
from orchestratord.runtime.tasklog import TaskEvent
from shared.problem import InvalidParams, NotFound

log = logging.getLogger("llorch.orchestratord")
MAX_LABEL = 80
MAX_WAIT_MS = 60_000
# A pinned job waits for its target only so long: a dead worker must not hold a run forever.
DEFAULT_DEADLINE_MS = 120_000


class Tasks(Protocol):
    """What compare runs need of the task service (as the admin: the run's own tasks)."""

    async def submit(self, req: TaskRequest) -> TaskRecord: ...
    async def events(self, task_id: str) -> AsyncIterator[TaskEvent]: ...
    async def cancel(self, task_id: str) -> TaskRecord: ...
    async def get(self, task_id: str) -> TaskRecord: ...


class RunStore(Protocol):
    def save_compare_run(self, record: dict[str, Any]) -> None: ...
    def get_compare_run(self, run_id: str) -> dict[str, Any] | None: ...
    def list_compare_runs(self, limit: int, tenant: str | None, everyone: bool) -> list[Any]: ...


def visible(record: Mapping[str, Any], tenant: str | None, admin: bool) -> bool:
    return admin or record.get("tenant") == tenant


class CompareService:
    def __init__(
        self,
        tasks: Tasks,
        store: RunStore,
        *,
        clock: Callable[[], int],
        serves: Callable[[Target, str], bool],
    ) -> None:
        """`serves(target, model)`: whether a worker or pool can run the model now."""
        self.tasks = tasks
        self.store = store
        self.clock = clock
        self.serves = serves
        self.running: dict[str, CompareRun] = {}
        self._done: dict[str, asyncio.Event] = {}
        self._watchers: set[asyncio.Task[None]] = set()

    async def start(self, body: object, *, caller: Caller) -> CompareRun:
        if not isinstance(body, Mapping):
            raise InvalidParams(
                "the body must be a JSON object",
                errors=[{"field": "body", "message": "must be a JSON object"}],
            )
        targets = parse_targets(body.get("targets"))
        label = body.get("label")
        if label is not None and (not isinstance(label, str) or len(label) > MAX_LABEL):
            raise InvalidParams(
                "label must be a string of at most 80 characters",
                errors=[{"field": "label", "message": f"must be at most {MAX_LABEL} characters"}],
            )
        job = job_of(body)
        if "task_id" in job:
            raise InvalidParams(
                "a compare run names no task_id: each target gets its own task",
                errors=[{"field": "task_id", "message": "is not allowed in a compare run"}],
            )
        req = parse_task_request(job, caller=caller)
        missing = [str(t) for t in targets if not self.serves(t, req.model)]
        if missing:
            message = f"{', '.join(missing)} serve(s) no {req.model!r}"
            raise InvalidParams(message, errors=[{"field": "targets", "message": message}])
        if req.deadline_ms is None:
            req = dataclasses.replace(req, deadline_ms=DEFAULT_DEADLINE_MS)
        run = CompareRun(
            id=uuid.uuid4().hex[:16],
            created_ms=self.clock(),
            model=req.model,
            job=job,
            targets=[str(t) for t in targets],
            task_ids=[],
            tenant=req.tenant,
            label=label,
        )
        try:
            for t in targets:
                record = await self.tasks.submit(dataclasses.replace(req, pin=str(t)))
                run.task_ids.append(record.id)
        except BaseException:
            # All or nothing: a target refused (queue full, admission) takes the others back.
            for task_id in run.task_ids:
                with contextlib.suppress(Exception):
                    await self.tasks.cancel(task_id)
            raise
        self.running[run.id] = run
        self._done[run.id] = asyncio.Event()
        await asyncio.to_thread(self.store.save_compare_run, run.to_json())
        watcher = asyncio.create_task(self._watch(run), name=f"compare-{run.id}")
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return run

    async def _watch(self, run: CompareRun) -> None:
        """Wait for every task's end, then save the figures. Being a reader keeps the tasks
        running when the browser that started them goes away (ORCH-024)."""

        async def drain(task_id: str) -> None:
            with contextlib.suppress(NotFound):
                async for event in await self.tasks.events(task_id):
                    del event

        try:
            await asyncio.gather(*(drain(t) for t in run.task_ids))
            records = [(await self.tasks.get(t)).to_json() for t in run.task_ids]
            run.finish(self.clock(), records)
            await asyncio.to_thread(self.store.save_compare_run, run.to_json())
        except Exception:
            log.exception("compare run %s could not be saved", run.id)
        finally:
            self.running.pop(run.id, None)
            done = self._done.pop(run.id, None)
            if done is not None:
                done.set()

    async def recover(self) -> int:
        """At startup: runs a previous process left running are saved as done with their
        tasks' recorded outcomes (the store marked those tasks failed). Returns how many."""
        n = 0
        saved = await asyncio.to_thread(self.store.list_compare_runs, 500, None, True)
        for record in saved:
            if record.get("status") != "running":
                continue
            run = CompareRun(
                id=record["id"],
                created_ms=record["created_ms"],
                model=record["model"],
                job=record["job"],
                targets=[r["target"] for r in record["runs"]],
                task_ids=[r["task_id"] for r in record["runs"]],
                tenant=record.get("tenant"),
                label=record.get("label"),
            )
            records = []
            for task_id in run.task_ids:
                try:
                    records.append((await self.tasks.get(task_id)).to_json())
                except NotFound:
                    records.append({"id": task_id, "status": "failed", "error_code": "LOST"})
            run.finish(self.clock(), records)
            await asyncio.to_thread(self.store.save_compare_run, run.to_json())
            n += 1
        return n

    async def get(self, run_id: str, *, tenant: str | None, admin: bool) -> dict[str, Any]:
        run = self.running.get(run_id)
        record = (
            run.to_json() if run else await asyncio.to_thread(self.store.get_compare_run, run_id)
        )
        if record is None or not visible(record, tenant, admin):
            raise NotFound(f"no compare run {run_id}")
        return record

    async def wait(self, run_id: str, wait_ms: int) -> None:
        done = self._done.get(run_id)
        if done is not None and wait_ms > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(wait_ms, MAX_WAIT_MS) / 1000):
                    await done.wait()

    async def list(self, limit: int, *, tenant: str | None, admin: bool) -> list[Any]:
        return await asyncio.to_thread(self.store.list_compare_runs, limit, tenant, admin)

    async def stop(self) -> None:
        for w in list(self._watchers):
            w.cancel()
        for w in list(self._watchers):
            with contextlib.suppress(asyncio.CancelledError):
                await w


__all__ = ["MAX_TARGETS", "CompareService"]
