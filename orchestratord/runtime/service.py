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

from orchestratord.domain.admission import check_choices, check_embeddable, check_servable
from orchestratord.domain.queue import QueueEntry, QueueFullError, task_cost
from orchestratord.domain.registry import Worker, WorkerListing
from orchestratord.domain.scheduler import cluster_view, task_view
from orchestratord.domain.tasks import TaskQuery, TaskRecord, TaskRequest, parse_task_request
from orchestratord.domain.tenancy import ADMIN, Caller
from orchestratord.metrics import Metrics
from orchestratord.policy import PolicyHolder
from orchestratord.runtime.context import check_context, prompt_blocks
from orchestratord.runtime.core import ActiveTask, Core, wall_ms
from orchestratord.runtime.dispatch import dispatch_loop
from orchestratord.runtime.follow import flatten, follow
from orchestratord.runtime.runner import break_streams
from orchestratord.runtime.tasklog import TaskEvent, TaskLog
from orchestratord.settings import Settings
from orchestratord.store.db import BatchWriter, Store
from shared.problem import AdmissionReject, Conflict, NotFound, QueueFull, WorkerReset
from shared.sse import KEEPALIVE_S as KEEPALIVE_S  # the interval of its task streams
from shared.wire import KvBlockReport, QueuedData, WorkerStatus

__all__ = ["TaskEvent", "TaskRecord", "TaskRequest", "TaskService", "parse_task_request"]
log = logging.getLogger("llorch.orchestratord")


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
        # The fleet's desired models are expected too: a task for one with no replica queues
        # and the plan brings one up (ORCH-360). Set by the app once the fleet is loaded.
        self.fleet_models: Callable[[], frozenset[str]] = frozenset
        self._loop: asyncio.Task[None] | None = None
        # Client task ids being submitted right now: a second submit of one waits for the
        # first to settle, so an id never makes two tasks (ORCH-157).
        self._claims: dict[tuple[str | None, str], asyncio.Future[None]] = {}
        self._seq_ms, self._seq = -1, 0  # the last id's millisecond, and its number in it

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

    # --- client API -----------------------------------------------------------------------

    async def submit(self, req: TaskRequest) -> TaskRecord:
        """Admit and enqueue a task; returns its record (status "queued").

        A client `task_id` is the tenant's own (ORCH-156): one its tenant already used returns
        the existing record (idempotent resubmission), or is a Conflict when the model or the
        prompt differ; another tenant's use of the same id is another task. Concurrent
        submits of one id make one task (ORCH-157). Raises QueueFull or AdmissionReject (429
        with retry_after_ms).
        """
        if req.task_id is None:
            return await self._submit(req)
        key = (req.tenant, req.task_id)
        while (other := self._claims.get(key)) is not None:
            await asyncio.shield(other)  # its outcome is in memory when it settles
        # Claimed before the first await: no other submit of this id gets past the loop above.
        claim = self._claims[key] = asyncio.get_running_loop().create_future()
        try:
            existing = await self._known(req.task_id, req.tenant)
            if existing is None or existing.tenant != req.tenant:
                return await self._submit(req)
            if existing.prompt_hash != req.prompt_hash or existing.model != req.model:
                raise Conflict(f"task_id {req.task_id} was used for a different task")
            return existing
        finally:
            del self._claims[key]
            claim.set_result(None)

    async def _submit(self, req: TaskRequest) -> TaskRecord:
        reg = self.registry
        serving = reg.serving(req.model)
        recent = not serving and reg.seen_within(
            req.model, self.clock(), self.settings.model_grace_ms
        )
        expected = self.expected_models | self.fleet_models()
        check_servable(req, serving, expected, reg.known_models(), recent=recent)
        counted = await check_context(self, req, serving)
        blocks = await prompt_blocks(self, req, serving, counted)
        if req.embed_input is not None:
            check_embeddable(req, serving)
        check_choices(req, serving)
        now = self.clock()
        tenants = self.tenants
        estimate = req.prompt_tokens_estimate
        tenants.check(req, estimate, now)  # the tenant's limits, before the policy (ORCH-320)
        # A client-chosen id is kept beside the server's, scoped to the tenant (ORCH-156).
        task_id = self._new_id(now)
        decision = await self.policy_calls.admit(
            task_view(task_id, req, 0, tenants.view(req.tenant, now)),
            lambda: cluster_view(self.queue, self.registry, self.running_by_tenant, now),
        )
        # Nothing below awaits until the task is queued: the next admission sees it (POL-093).
        if decision.accept:
            # A policy's own admit runs off the loop: others may have been admitted meanwhile,
            # so the limits are checked again, with no await from here to the queue.
            tenants.check(req, estimate, now)
        else:
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
            n=req.n,
            tenant=req.tenant,
            cost=task_cost(
                req.max_tokens,
                req.n,
                len(req.embed_input) if req.embed_input is not None else None,
            ),
        )
        if blocks is not None:
            entry.blocks, entry.block_size = blocks.block_hashes, blocks.block_size
            entry.prompt_tokens = blocks.n_tokens
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
            client_id=req.task_id,
        )
        active = ActiveTask(req, record, TaskLog(), entry, time.perf_counter())
        active.admitted = tenants.admitted(req, estimate, now)
        self.tasks[task_id] = active
        if req.task_id is not None:
            self.client_ids[(req.tenant, req.task_id)] = task_id
        queued: QueuedData = {"queue_position": self.queue.position(task_id)}
        active.log.append("queued", queued)
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

        The stream ends with `end{stop_reason: CANCELLED}` (Core.cancel_task); this returns
        once the task's runner unwound: its connection is closed (the worker frees the slot
        when it sees that) and its reservation released.
        """
        active = self._in_memory(task_id, caller.tenant)
        if active is None or not caller.sees(active.record.tenant):
            return await self.get(task_id, caller)
        runner = active.runner
        self.cancel_task(active)
        if runner is not None:
            await asyncio.wait([runner])  # never raises: the runner's own end is its business
        return active.record

    async def get(self, task_id: str, caller: Caller = ADMIN) -> TaskRecord:
        """The task record; raises NotFound (also for another tenant's task)."""
        record = await self._known(task_id, caller.tenant)
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

    def kv_report(self, worker_id: str, report: KvBlockReport) -> bool:
        """A heartbeat's cache report into the index (ORCH-400); True: ask for a full one."""
        w = self.registry.get(worker_id)
        if w is None:
            return False
        resync = self.registry.kv.apply(worker_id, w.model, report)
        if resync:
            log.info("worker %s: cache report out of sequence; asked for a full one", worker_id)
        return resync

    def drain_worker(self, worker_id: str, *, migrate: bool = False) -> WorkerListing:
        """POST /v2/workers/{id}/drain: no new task goes there; NotFound when unknown. With
        `migrate`, its running tasks fail over to other workers now (ORCH-385)."""
        w = self.registry.drain(worker_id)
        if w is None:
            raise NotFound(f"worker {worker_id} is not registered")
        if migrate:
            break_streams(self, w.id, "drained")
        log.info("worker %s draining: %d task(s) still running there", w.id, len(w.inflight))
        now = self.clock()
        if self.writer:
            self.writer.worker(w, w.state(now, self.registry.stale_ms))
        return w.listing(now, self.registry.stale_ms)

    def undrain_worker(self, worker_id: str) -> WorkerListing:
        """POST /v2/workers/{id}/undrain (ORCH-373): new tasks go there again, the queued ones
        for its model at once; NotFound when unknown."""
        w = self.registry.undrain(worker_id)
        if w is None:
            raise NotFound(f"worker {worker_id} is not registered")
        log.info("worker %s undrained: it takes new tasks again", w.id)
        now = self.clock()
        if self.writer:
            self.writer.worker(w, w.state(now, self.registry.stale_ms))
        self.wake(w.model)
        return w.listing(now, self.registry.stale_ms)

    def deregister_worker(self, worker_id: str) -> bool:
        w = self.registry.remove(worker_id)
        if w is not None and self.writer:
            self.writer.delete_worker(worker_id)
        return w is not None

    def worker_listings(self) -> list[WorkerListing]:
        return self.registry.listings(self.clock())

    # --- internals ------------------------------------------------------------------------

    def _new_id(self, now_ms: int) -> str:
        """A server-made task id (ORCH-151): 48 hex digits, the creation time and a sequence
        number, then 128 random bits that keep it unguessable. Listings sort by (created_ms,
        id), so tasks made in the same millisecond still list newest first."""
        self._seq = self._seq + 1 if now_ms == self._seq_ms else 0
        self._seq_ms = now_ms
        return f"{now_ms & 0xFFFF_FFFF_FFFF:012x}{self._seq:04x}{secrets.token_hex(16)}"

    def _in_memory(self, task_id: str, tenant: str | None) -> ActiveTask | None:
        """The task a caller of `tenant` means by `task_id`, if in memory: its tenant's task of
        that client-chosen id, else the task of that server-made id (ORCH-156)."""
        return self.tasks.get(self.client_ids.get((tenant, task_id), task_id))

    async def _known(self, task_id: str, tenant: str | None) -> TaskRecord | None:
        active = self._in_memory(task_id, tenant)
        if active is not None:
            return active.record
        if self.writer is not None and (pending := self.writer.pending(task_id, tenant)):
            return pending
        if self.store is None:
            return None
        # The database is read off the event loop: a slow disk must not stall every stream.
        return await asyncio.to_thread(self.store.find_task, task_id, tenant)

    async def _active(self, task_id: str, caller: Caller) -> ActiveTask:
        active = self._in_memory(task_id, caller.tenant)
        if active is not None and caller.sees(active.record.tenant):
            return active
        record = await self._known(task_id, caller.tenant) if active is None else None
        if record is not None and caller.sees(record.tenant):
            if record.error_code == "WORKER_RESET":
                # Its log went with the orchestratord that ran it (or expired since): the
                # task's own retriable error, not "no such task" (ORCH-026).
                raise WorkerReset(
                    f"task {task_id} failed ({record.error_message}); its events are gone; "
                    "submit it again"
                )
            raise NotFound(
                f"the events of task {task_id} are no longer retained; "
                "GET /v2/tasks/{id} has its outcome"
            )
        raise NotFound(f"no task {task_id}")
