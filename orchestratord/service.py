"""The task service: the one entry point the HTTP routes (/v2 and the OpenAI /v1 adapter) use.

Lives in the Starlette lifespan state as `request.state.service`.

    req = parse_task_request(body, tenant=tenant_of(request))   # InvalidParams
    record = await service.submit(req)                           # QueueFull / AdmissionReject
    async for ev in service.events(record.id):                   # TaskEvent(id, event, data)
        ...                                                      # ends after `end` or `error`
    await service.cancel(record.id)                              # idempotent

It owns the queue, the registry and the task logs, runs the scheduling loop, and starts one
runner per dispatched task (orchestratord.runner) that relays the worker's stream into the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from orchestratord.db import BatchWriter, Store
from orchestratord.dispatch import dispatch_loop
from orchestratord.follow import flatten, follow
from orchestratord.metrics import Metrics
from orchestratord.queue import QueueEntry, QueueFullError, TaskQueue
from orchestratord.registry import Registry, Worker, WorkerView
from orchestratord.relay import cancel_job
from orchestratord.scheduler import Policy, cluster_view, task_view
from orchestratord.settings import Settings
from orchestratord.tasks import (
    TaskEvent,
    TaskLog,
    TaskRecord,
    TaskRequest,
    TaskStatus,
    parse_task_request,
)
from shared.problem import AdmissionReject, Conflict, NotFound, QueueFull

__all__ = ["TaskEvent", "TaskRecord", "TaskRequest", "TaskService", "parse_task_request"]
log = logging.getLogger("llorch.orchestratord")
RETRIABLE_CODES = frozenset(
    {
        "WORKER_RESET",
        "DECODE_TIMEOUT",
        "BUSY",
        "DRAINING",
        "QUEUE_FULL",
        "ADMISSION_REJECT",
        "MODEL_UNAVAILABLE",
    }
)
CANCEL_WAIT_S = 3.0


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(eq=False)
class ActiveTask:
    """A task the service tracks in memory: its request, record, event log and runner."""

    req: TaskRequest
    record: TaskRecord
    log: TaskLog
    entry: QueueEntry
    submitted: float  # perf_counter seconds, for latency metrics
    tokens: int = 0
    prompt_tokens: int | None = None
    first_token: float | None = None
    job_id: str | None = None
    worker_url: str | None = None
    runner: asyncio.Task[None] | None = None
    cancelling: bool = False
    grace: asyncio.TimerHandle | None = None


class TaskService:
    """Admission, queueing, dispatch and the event logs of every task."""

    def __init__(
        self,
        settings: Settings,
        *,
        policy: Policy,
        metrics: Metrics,
        client: httpx.AsyncClient,
        store: Store | None = None,
        writer: BatchWriter | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.settings = settings
        self.policy = policy
        self.metrics = metrics
        self.client = client
        self.store = store
        self.writer = writer
        self.clock = clock
        self.queue = TaskQueue(settings.queue_capacity, settings.queue_full_policy)
        self.registry = Registry(
            settings.heartbeat_stale_ms, settings.heartbeat_dead_ms, settings.worker_prefetch
        )
        self.tasks: dict[str, ActiveTask] = {}
        self.running_by_tenant: Counter[str] = Counter()
        self._finished: deque[str] = deque()
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

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

    def wake(self) -> None:
        """Ask for a scheduling pass (a task queued, a slot freed, a worker changed)."""
        self._wake.set()

    async def wait_for_work(self, wait_s: float) -> None:
        """Return when `wake` was called, or after `wait_s` (deadlines and sweeps)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_s):
                await self._wake.wait()
        self._wake.clear()

    def spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- client API -----------------------------------------------------------------------

    async def submit(self, req: TaskRequest) -> TaskRecord:
        """Admit and enqueue a task; returns its record (status "queued").

        A `task_id` already known returns the existing record (idempotent resubmission);
        the same id with a different prompt is a Conflict. Raises QueueFull or
        AdmissionReject (429 with retry_after_ms).
        """
        if req.task_id is not None:
            existing = self._known(req.task_id)
            if existing is not None:
                if existing.prompt_hash != req.prompt_hash or existing.model != req.model:
                    raise Conflict(f"task_id {req.task_id} was used for a different task")
                return existing
        now = self.clock()
        task_id = req.task_id or uuid.uuid4().hex
        cluster = cluster_view(self.queue, self.registry, self.running_by_tenant, now)
        decision = self.policy.admit(task_view(task_id, req, 0), cluster)
        if not decision.accept:
            self.metrics.tasks.labels("ADMISSION_REJECT").inc()
            retry = decision.retry_after_ms
            raise AdmissionReject(
                decision.reason or "rejected by the admission policy",
                retry_after_ms=retry if retry is not None else 1000,
            )
        deadline = req.deadline_ms or self.settings.default_deadline_ms or None
        entry = QueueEntry(
            task_id, req.model, req.priority, now, now + deadline if deadline else None
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
        self._save(record)
        self._wake.set()
        return record

    def events(self, task_id: str, after: int | None = None) -> AsyncIterator[TaskEvent]:
        """The task's events from id `after + 1` (all when None), live, ending after end/error.

        Raises NotFound at once for an unknown task or one whose events are no longer retained.
        Events: queued{queue_position}, started{worker_id, queue_ms}, token{t, i},
        end{tokens_out, ttft_ms, decode_time_ms, stop_reason} | error{code, message, retriable}.
        """
        active = self._active(task_id)
        return flatten(follow(self, active, after, None, cancel_on_detach=False))

    def frames(
        self,
        task_id: str,
        after: int | None = None,
        *,
        keepalive_s: float = 15.0,
        cancel_on_detach: bool = False,
    ) -> AsyncGenerator[list[TaskEvent], None]:
        """Like `events`, in batches of whatever is ready (the SSE route writes one batch per
        send); an empty batch means `keepalive_s` passed without an event."""
        return follow(self, self._active(task_id), after, keepalive_s, cancel_on_detach)

    async def cancel(self, task_id: str) -> None:
        """Cancel a queued or running task; a finished task is left as it is. NotFound if unknown.

        The stream ends with `end{stop_reason: CANCELLED}`; the worker's slot is freed.
        """
        active = self.tasks.get(task_id)
        if active is None:
            if self._known(task_id) is None:
                raise NotFound(f"no task {task_id}")
            return
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

    def get(self, task_id: str) -> TaskRecord:
        """The task record; raises NotFound."""
        record = self._known(task_id)
        if record is None:
            raise NotFound(f"no task {task_id}")
        return record

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
        self._wake.set()
        return w

    def heartbeat(self, worker_id: str, state: str, slots_total: int, slots_busy: int) -> bool:
        w = self.registry.heartbeat(worker_id, state, slots_total, slots_busy, self.clock())
        if w is None:
            return False
        if self.writer:
            self.writer.worker(w, w.reported)
        self._wake.set()
        return True

    def deregister_worker(self, worker_id: str) -> bool:
        w = self.registry.remove(worker_id)
        if w is not None and self.writer:
            self.writer.delete_worker(worker_id)
        return w is not None

    def worker_views(self) -> list[WorkerView]:
        return self.registry.views(self.clock())

    # --- outcomes (used by the runner) ----------------------------------------------------

    def fail(self, active: ActiveTask, code: str, message: str, *, retriable: bool) -> None:
        self.queue.remove(active.record.id)
        self._close(
            active,
            "failed",
            code,
            "error",
            {"code": code, "message": message, "retriable": retriable},
            error_message=message,
        )

    def finish_cancelled(self, active: ActiveTask) -> None:
        self.queue.remove(active.record.id)
        self._close(
            active,
            "cancelled",
            "CANCELLED",
            "end",
            {
                "tokens_out": active.tokens,
                "ttft_ms": self.ttft_ms(active),
                "decode_time_ms": 0.0,
                "stop_reason": "CANCELLED",
            },
        )

    def finish_end(self, active: ActiveTask, data: dict[str, Any]) -> None:
        stop = str(data.get("stop_reason", "EOS"))
        tokens = int(data.get("tokens_out", active.tokens))
        end = {
            "tokens_out": tokens,
            "ttft_ms": self.ttft_ms(active),
            "decode_time_ms": data.get("decode_time_ms"),
            "stop_reason": stop,
        }
        if active.prompt_tokens is not None:
            end["prompt_tokens"] = active.prompt_tokens
        active.record.stop_reason = stop
        if stop == "CANCELLED":
            self._close(active, "cancelled", "CANCELLED", "end", end)
        else:
            self._close(active, "succeeded", "OK", "end", end)

    def ttft_ms(self, active: ActiveTask) -> float | None:
        if active.first_token is None:
            return None
        return round((active.first_token - active.submitted) * 1000, 3)

    def _close(
        self,
        active: ActiveTask,
        status: TaskStatus,
        code: str,
        event: str,
        data: dict[str, Any],
        error_message: str | None = None,
    ) -> None:
        if active.log.closed:
            return
        rec = active.record
        tokens_out = data.get("tokens_out")
        rec.status, rec.finished_ms = status, self.clock()
        rec.tokens_out = tokens_out if isinstance(tokens_out, int) else active.tokens
        rec.ttft_ms = self.ttft_ms(active)
        if event == "error":
            rec.error_code, rec.error_message = code, error_message
        active.log.append(event, data)
        self.metrics.tasks.labels(code).inc()
        if active.grace is not None:
            active.grace.cancel()
        self._save(rec)
        self._finished.append(rec.id)
        while len(self._finished) > self.settings.retain_tasks:
            self.tasks.pop(self._finished.popleft(), None)

    def _save(self, record: TaskRecord) -> None:
        if self.writer:
            self.writer.task(record)

    # --- internals ------------------------------------------------------------------------

    def _known(self, task_id: str) -> TaskRecord | None:
        active = self.tasks.get(task_id)
        if active is not None:
            return active.record
        return self.store.get_task(task_id) if self.store else None

    def _active(self, task_id: str) -> ActiveTask:
        active = self.tasks.get(task_id)
        if active is None:
            if self._known(task_id) is not None:
                raise NotFound(
                    f"the events of task {task_id} are no longer retained; "
                    "GET /v2/tasks/{id} has its outcome"
                )
            raise NotFound(f"no task {task_id}")
        return active

    async def _closed(self, active: ActiveTask) -> None:
        while not active.log.closed:
            await active.log.wait(len(active.log.events))
