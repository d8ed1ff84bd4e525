"""The task service: the one entry point the HTTP routes (/v2 and the OpenAI /v1 adapter) use.

Lives in the Starlette lifespan state as `request.state.service`.

    req = parse_task_request(body, tenant=tenant_of(request))   # InvalidParams
    record = await service.submit(req)                           # QueueFull / AdmissionReject
    async for ev in service.events(record.id):                   # TaskEvent(id, event, data)
        ...                                                      # ends after `end` or `error`
    await service.cancel(record.id)                              # idempotent

It owns the queue, the registry and the task logs (through `Core`), runs the scheduling loop,
and starts one runner per dispatched task (runtime.runner) that relays the worker's stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import httpx

from orchestratord.domain.admission import check_embeddable, check_servable
from orchestratord.domain.queue import QueueEntry, QueueFullError
from orchestratord.domain.registry import Worker, WorkerListing
from orchestratord.domain.scheduler import cluster_view, task_view
from orchestratord.domain.tasks import TaskQuery, TaskRecord, TaskRequest, parse_task_request
from orchestratord.domain.tenancy import ADMIN, Caller
from orchestratord.metrics import Metrics
from orchestratord.policy import PolicyHolder
from orchestratord.runtime.core import ActiveTask, Core, wall_ms
from orchestratord.runtime.dispatch import dispatch_loop
from orchestratord.runtime.follow import flatten, follow
from orchestratord.runtime.tasklog import TaskEvent, TaskLog
from orchestratord.settings import Settings
from orchestratord.store.db import BatchWriter, Store
from orchestratord.worker_client.relay import cancel_job
from shared.problem import AdmissionReject, Conflict, NotFound, QueueFull
from shared.sse import KEEPALIVE_S as KEEPALIVE_S  # the interval of its task streams
from shared.wire import WorkerStatus

__all__ = ["TaskEvent", "TaskRecord", "TaskRequest", "TaskService", "parse_task_request"]
log = logging.getLogger("llorch.orchestratord")
CANCEL_WAIT_S = 3.0


class TaskService(Core):
    """Admission, queueing, dispatch and the event logs of every task."""

    def __init__(
        self,
        settings: Settings,
        *,
        policy: PolicyHolder,
        metrics: Metrics,
        client: httpx.AsyncClient,
        store: Store | None = None,
        writer: BatchWriter | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        super().__init__(
            settings, policy=policy, metrics=metrics, store=store, writer=writer, clock=clock
        )
        self.client = client
        self.expected_models = frozenset(settings.expect_models)
        self._loop: asyncio.Task[None] | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.create_task(dispatch_loop(self), name="dispatch")

    async def stop(self) -> None:
        """Stop dispatching; unfinished tasks end with `error{WORKER_RESET}` (running ones are
        cancelled on their workers by the closed connection). Safe to call twice."""
        tasks = [t for t in (self._loop, *(a.runner for a in self.tasks.values())) if t]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        for entry in list(self.queue):
            self.fail(
                self.tasks[entry.task_id],
                "WORKER_RESET",
                "orchestratord is shutting down; submit the task again",
                retriable=True,
            )
        for bg in list(self._background):
            bg.cancel()
        self.connections.close()
        self.policy_calls.close()

    def is_open(self, task_id: str) -> bool:
        """Whether the task is in memory and has not ended."""
        active = self.tasks.get(task_id)
        return active is not None and not active.log.closed

    def cancel_soon(self, task_id: str) -> None:
        if self.is_open(task_id):
            self.spawn(self.cancel(task_id))

    # --- client API -----------------------------------------------------------------------

    async def submit(self, req: TaskRequest) -> TaskRecord:
        """Admit and enqueue a task; returns its record (status "queued").

        A `task_id` already known to the same tenant returns the existing record (idempotent
        resubmission); the same id with a different prompt, or an id another tenant used, is
        a Conflict. Raises QueueFull or AdmissionReject (429 with retry_after_ms).
        """
        if req.task_id is not None:
            existing = await self._known(req.task_id)
            if existing is not None:
                if (
                    existing.tenant != req.tenant
                    or existing.prompt_hash != req.prompt_hash
                    or existing.model != req.model
                ):
                    raise Conflict(f"task_id {req.task_id} was used for a different task")
                return existing
        reg = self.registry
        serving = reg.serving(req.model)
        check_servable(req, serving, self.expected_models, reg.known_models())
        if req.embed_input is not None:
            check_embeddable(req, serving)
        now = self.clock()
        # Server-made ids are 128 random bits: unguessable, so an id is no capability leak.
        task_id = req.task_id or secrets.token_hex(16)
        decision = await self.policy_calls.admit(
            task_view(task_id, req, 0),
            lambda: cluster_view(self.queue, self.registry, self.running_by_tenant, now),
        )
        # Nothing below awaits until the task is queued: the next admission sees it (POL-093).
        if not decision.accept:
            self.metrics.tasks.labels("ADMISSION_REJECT").inc()
            retry = decision.retry_after_ms
            raise AdmissionReject(
                decision.reason or "rejected by the admission policy",
                retry_after_ms=retry if retry is not None else 1000,
            )
        deadline = req.deadline_ms or self.settings.default_deadline_ms or None
        entry = QueueEntry(
            task_id,
            req.model,
            req.priority,
            now,
            now + deadline if deadline else None,
            pin=req.pin,
            embed=req.embed_input is not None,
        )
        try:
            dropped = self.queue.push(entry)
        except QueueFullError as e:
            self.metrics.tasks.labels("QUEUE_FULL").inc()
            raise QueueFull(str(e), retry_after_ms=1000) from None
        record = TaskRecord(
            id=task_id,
            model=req.model,
            priority=req.priority,
            status="queued",
            prompt_hash=req.prompt_hash,
            created_ms=now,
            max_tokens=req.max_tokens,
            tenant=req.tenant,
            session_id=req.session_id,
        )
        active = ActiveTask(req, record, TaskLog(), entry, time.perf_counter())
        self.tasks[task_id] = active
        active.log.append("queued", {"queue_position": self.queue.position(task_id)})
        for d in dropped:
            self.fail(
                self.tasks[d.task_id],
                "QUEUE_FULL",
                "dropped from a full queue for newer work",
                retriable=True,
            )
        self.save(record)
        self.wake(req.model)
        return record

    async def events(
        self, task_id: str, caller: Caller = ADMIN, after: int | None = None
    ) -> AsyncIterator[TaskEvent]:
        """The task's events from id `after + 1` (all when None), live, ending after end/error.

        Raises NotFound at once for an unknown task, one the caller may not see, or one whose
        events are no longer retained. Events: queued{queue_position}, started{worker_id,
        queue_ms}, token{t, i}, end{tokens_out, ttft_ms, decode_time_ms, stop_reason} |
        error{code, message, retriable}.
        """
        active = await self._active(task_id, caller)
        return flatten(follow(self, active, after, None))

    async def frames(
        self,
        task_id: str,
        caller: Caller = ADMIN,
        after: int | None = None,
    ) -> AsyncGenerator[list[TaskEvent], None]:
        """Like `events`, in batches of whatever is ready (the SSE route writes one batch per
        send); an empty batch means KEEPALIVE_S passed without an event."""
        return follow(self, await self._active(task_id, caller), after, KEEPALIVE_S)

    async def cancel(self, task_id: str, caller: Caller = ADMIN) -> TaskRecord:
        """Cancel a queued or running task; a finished task is left as it is. NotFound if
        unknown or not the caller's. Returns the record as it is afterwards.

        The stream ends with `end{stop_reason: CANCELLED}`; the worker's slot is freed.
        """
        active = self.tasks.get(task_id)
        if active is None or not caller.sees(active.record.tenant):
            return await self.get(task_id, caller)
        await self._cancel(active)
        return active.record

    async def _cancel(self, active: ActiveTask) -> None:
        task_id = active.record.id
        if active.log.closed:
            return
        if self.queue.remove(task_id) is not None:
            self.finish_cancelled(active)
            return
        if active.cancelling:
            return
        active.cancelling = True
        acknowledged = False
        if active.job_id and active.worker_url:
            acknowledged = await cancel_job(
                self.client, active.worker_url, self.settings.cluster_token, active.job_id
            )
        if acknowledged:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed(active), CANCEL_WAIT_S)
        if not active.log.closed and active.runner is not None:
            # Closing the worker connection cancels the job there too.
            active.runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await active.runner
        if not active.log.closed:
            self.finish_cancelled(active)

    async def get(self, task_id: str, caller: Caller = ADMIN) -> TaskRecord:
        """The task record; raises NotFound (also for another tenant's task)."""
        record = await self._known(task_id)
        if record is None or not caller.sees(record.tenant):
            raise NotFound(f"no task {task_id}")
        return record

    async def list_tasks(self, query: TaskQuery) -> tuple[list[TaskRecord], bool]:
        """A page of records, newest first, and whether more follow. The database has every
        task; the records in memory are newer (the writer batches), so they win."""
        rows = await asyncio.to_thread(self.store.list_tasks, query) if self.store else []
        merged = {r.id: r for r in rows}
        for active in self.tasks.values():
            rec = active.record
            if query.matches(rec):
                merged[rec.id] = rec
            else:
                merged.pop(rec.id, None)
        page = sorted(merged.values(), key=lambda r: (r.created_ms, r.id), reverse=True)
        return page[: query.limit], len(page) > query.limit or len(rows) >= query.limit

    def models(self) -> list[str]:
        """Names of models served by at least one live worker, sorted."""
        return self.registry.models(self.clock())

    def queue_position(self, task_id: str) -> int | None:
        return self.queue.position(task_id)

    # --- worker API -----------------------------------------------------------------------

    def register_worker(self, worker: Worker) -> Worker:
        w = self.registry.register(worker, self.clock())
        log.info("worker %s registered: %s at %s, %d slots", w.id, w.model, w.url, w.slots_total)
        if self.writer:
            self.writer.worker(w, "ready")
        self.wake(w.model)
        return w

    def heartbeat(
        self,
        worker_id: str,
        state: WorkerStatus,
        slots_total: int,
        slots_busy: int,
        embeddings: bool | None = None,
    ) -> bool:
        w = self.registry.heartbeat(
            worker_id, state, slots_total, slots_busy, self.clock(), embeddings
        )
        if w is None:
            return False
        if self.writer:
            self.writer.worker(w, w.reported)
        self.wake(w.model)
        return True

    def drain_worker(self, worker_id: str) -> WorkerListing:
        """POST /v2/workers/{id}/drain: no new task goes there; NotFound when unknown."""
        w = self.registry.drain(worker_id)
        if w is None:
            raise NotFound(f"worker {worker_id} is not registered")
        log.info("worker %s draining: %d task(s) still running there", w.id, len(w.inflight))
        now = self.clock()
        if self.writer:
            self.writer.worker(w, w.state(now, self.registry.stale_ms))
        return w.listing(now, self.registry.stale_ms)

    def deregister_worker(self, worker_id: str) -> bool:
        w = self.registry.remove(worker_id)
        if w is not None and self.writer:
            self.writer.delete_worker(worker_id)
        return w is not None

    def worker_listings(self) -> list[WorkerListing]:
        return self.registry.listings(self.clock())

    # --- internals ------------------------------------------------------------------------

    async def _known(self, task_id: str) -> TaskRecord | None:
        active = self.tasks.get(task_id)
        if active is not None:
            return active.record
        if self.store is None:
            return None
        # The database is read off the event loop: a slow disk must not stall every stream.
        return await asyncio.to_thread(self.store.get_task, task_id)

    async def _active(self, task_id: str, caller: Caller) -> ActiveTask:
        active = self.tasks.get(task_id)
        if active is not None and caller.sees(active.record.tenant):
            return active
        record = await self._known(task_id) if active is None else None
        if record is not None and caller.sees(record.tenant):
            raise NotFound(
                f"the events of task {task_id} are no longer retained; "
                "GET /v2/tasks/{id} has its outcome"
            )
        raise NotFound(f"no task {task_id}")

    async def _closed(self, active: ActiveTask) -> None:
        while not active.log.closed:
            await active.log.wait(len(active.log.events))
