"""The state every part of the runtime shares, and the one place a task's outcome is written.

`Core` holds the queue, the registry, the reservation ledger and the tasks in memory; the
dispatch loop, the runners and the stream readers work on it, and `TaskService` (the client
API) is built on it. Ending a task (`fail`, `finish_cancelled`, `finish_end`) happens only here,
so a task ends once, with a reason, its record saved and its readers woken.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestratord import logs
from orchestratord.domain.queue import QueueEntry, TaskQueue
from orchestratord.domain.registry import Registry
from orchestratord.domain.reservations import Ledger
from orchestratord.domain.tasks import TaskRecord, TaskRequest, TaskStatus
from orchestratord.metrics import Metrics
from orchestratord.policy import PolicyHolder
from orchestratord.runtime.policy_calls import PolicyCalls
from orchestratord.runtime.tasklog import TaskLog
from orchestratord.runtime.tenants import TenantAccounts
from orchestratord.settings import Settings
from orchestratord.store.db import BatchWriter, Store
from orchestratord.worker_client.http1 import ConnectionPool
from shared.wire import EndData, ErrorData, FailoverReason, JobEndData

log = logging.getLogger("llorch.orchestratord")


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
    runner: asyncio.Task[None] | None = None
    cancelling: bool = False
    grace: asyncio.TimerHandle | None = None
    # Its tenant's rate window when it was admitted, and its prompt's estimate (ORCH-322).
    admitted: tuple[int, int] = (0, 0)
    # What a failover needs (ORCH-380), in memory only like the request (ORCH-063): the ids of
    # the tokens relayed so far, how often the task moved on, and how many of `ids` the
    # current attempt's worker was given to resume from.
    ids: list[int] = field(default_factory=list)
    failovers: int = 0
    resumed: int = 0
    warmed: int = 0  # of `ids`, those a standby worker was last asked to prefill (ORCH-386)
    warming: bool = False
    # Set when orchestratord itself breaks the stream (its worker was marked dead, ORCH-381).
    broken: FailoverReason | None = None


class Core:
    """Shared runtime state; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        *,
        policy: PolicyHolder,
        metrics: Metrics,
        store: Store | None = None,
        writer: BatchWriter | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.settings = settings
        self.policy = policy
        # The policy's own code runs on a thread of its own, behind a breaker (POL-090).
        self.policy_calls = PolicyCalls(policy, settings, metrics)
        self.metrics = metrics
        self.store = store
        self.writer = writer
        self.clock = clock
        weights = settings.tenant_weight_map
        # The queue asks weight(tenant) as each task is queued; whoever owns the tenants'
        # weights (flags today) may set `queue.weight` to another lookup at any time.
        self.queue = TaskQueue(
            settings.queue_capacity,
            settings.queue_full_policy,
            discipline=settings.queue_discipline,
            weight=lambda tenant: weights.get(tenant, 1.0) if tenant is not None else 1.0,
        )
        self.registry = Registry(
            settings.heartbeat_stale_ms,
            settings.heartbeat_dead_ms,
            settings.worker_prefetch,
            kv_entries=settings.cache_index_entries,
        )
        self.ledger = Ledger(self.registry)
        self.tasks: dict[str, ActiveTask] = {}
        # (tenant, client-chosen task_id) -> the id of that task in `tasks` (ORCH-156).
        self.client_ids: dict[tuple[str | None, str], str] = {}
        self._finished: deque[str] = deque()
        self.retained_bytes = 0  # event logs of finished tasks kept for Last-Event-ID
        self._wake = asyncio.Event()
        self.dirty: set[str] = set()  # models whose placement may have changed
        self._background: set[asyncio.Task[Any]] = set()
        self.observers: list[Callable[[TaskRecord], None]] = []
        # Kept-alive connections to the workers, for the relay (worker_client/http1.py).
        self.connections = ConnectionPool()
        # Per-tenant limits and usage (ORCH-320..ORCH-329), in memory on the hot path.
        self.tenants = TenantAccounts(settings, metrics, store, clock)
        # A tenant's weight in fair queueing (ORCH-352): its stored limits' weight once an
        # operator set its limits (ORCH-323), else its `--tenant-weight` flag, else 1.0.
        accounts = self.tenants.quotas.limits
        self.queue.weight = lambda tenant: (
            accounts[tenant].weight
            if tenant in accounts
            else weights.get(tenant, 1.0)
            if tenant is not None
            else 1.0
        )

    @property
    def running_by_tenant(self) -> dict[str, int]:
        return self.ledger.running_by_tenant

    # --- wake-ups and background work ---------------------------------------------------------

    def wake(self, model: str) -> None:
        """Ask for a scheduling pass over `model` (a task queued, a slot freed, a worker
        changed): the pass looks only at the models something happened to."""
        self.dirty.add(model)
        self._wake.set()

    async def wait_for_work(self, wait_s: float) -> set[str]:
        """Return the models woken for, when `wake` was called; every queued model after
        `wait_s` without a wake (deadlines, sweeps, workers going stale or coming back)."""
        woken = True
        try:
            async with asyncio.timeout(wait_s):
                await self._wake.wait()
        except TimeoutError:
            woken = False
        self._wake.clear()
        models, self.dirty = self.dirty, set()
        if not woken:
            models.update(self.queue.models())
        return models

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def cancel_soon(self, task_id: str) -> None:
        """Cancel the task if it is open (its reader left, its client asked); see `cancel_task`."""
        active = self.tasks.get(task_id)
        if active is not None:
            self.cancel_task(active)

    def cancel_task(self, active: ActiveTask) -> None:
        """The one cancel path (ORCH-015): a queued task leaves the queue; a running one's
        runner is cancelled, which closes its worker connection, and the worker takes that as
        the job's cancel (WRK-053). The task ends `cancelled` here and now; the runner, when
        it unwinds, finds it ended and releases its reservation."""
        if active.log.closed:
            return
        active.cancelling = True
        if active.runner is not None:
            active.runner.cancel()
        self.finish_cancelled(active)

    # --- outcomes -----------------------------------------------------------------------------

    def fail(self, active: ActiveTask, code: str, message: str, *, retriable: bool) -> None:
        self.queue.remove(active.record.id)
        error: ErrorData = {"code": code, "message": message, "retriable": retriable}
        self._close(active, "failed", code, "error", error, error_message=message)

    def finish_cancelled(self, active: ActiveTask) -> None:
        self.queue.remove(active.record.id)
        active.record.stop_reason = "CANCELLED"
        end: EndData = {
            "tokens_out": active.tokens,
            "ttft_ms": self.ttft_ms(active),
            "decode_time_ms": 0.0,
            "stop_reason": "CANCELLED",
        }
        if active.failovers:
            end["failovers"] = active.failovers
        self._close(active, "cancelled", "CANCELLED", "end", end)

    def finish_end(
        self, active: ActiveTask, data: JobEndData, embeddings: list[list[float]] | None = None
    ) -> None:
        """End the task with the worker's `end` (for an embeddings task, its vectors)."""
        stop = data.get("stop_reason", "EOS")
        tokens = int(data.get("tokens_out", active.tokens))
        end: EndData = {
            "tokens_out": tokens,
            "ttft_ms": self.ttft_ms(active),
            "decode_time_ms": data.get("decode_time_ms"),
            "stop_reason": stop,
        }
        if active.prompt_tokens is not None:
            end["prompt_tokens"] = active.prompt_tokens
        cached = data.get("prompt_tokens_cached")
        if isinstance(cached, int):  # prompt tokens the worker took from its prefix cache (WRK-100)
            end["prompt_tokens_cached"] = cached
        predicted = active.entry.predicted
        if predicted is not None:  # what the cache index expected there (ORCH-404)
            end["cached_tokens_predicted"] = predicted
            if isinstance(cached, int):
                outcome = "hit" if cached >= predicted else "miss"
                if predicted == 0:
                    outcome = "unforeseen" if cached > 0 else ""
                if outcome:
                    self.metrics.cache_predictions.labels(outcome).inc()
        choices = data.get("choices")
        if choices is not None:  # a task of n > 1 choices (ORCH-270)
            end["choices"] = choices
        if embeddings is not None:  # an embeddings task's vectors (ORCH-230)
            end["embeddings"] = embeddings
        if active.failovers:  # ORCH-382
            end["failovers"] = active.failovers
        if active.log.closed:
            return
        active.record.stop_reason = stop
        worker_id = active.record.worker_id
        if active.entry.blocks and worker_id is not None and stop != "CANCELLED":
            self.registry.kv.note(worker_id, active.req.model, active.entry.blocks)
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
        data: Mapping[str, object],
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
        self.tenants.closed(
            active.req,
            active.admitted,
            event,
            data,
            active.prompt_tokens,
            active.tokens,
            rec.finished_ms,
        )
        if active.grace is not None:
            active.grace.cancel()
            active.grace = None
        self.save(rec)
        logs.task_line(rec.to_json)
        self._retain(active)

    def _retain(self, active: ActiveTask) -> None:
        """Keep a finished task's events for readers that reconnect, within both bounds: the
        last `--retain-tasks` tasks and `--retain-events-bytes` of events; the oldest go first
        (their records stay in the database)."""
        self._finished.append(active.record.id)
        self.retained_bytes += active.log.nbytes
        s = self.settings
        while self._finished and (
            len(self._finished) > s.retain_tasks or self.retained_bytes > s.retain_events_bytes
        ):
            gone = self.tasks.pop(self._finished.popleft(), None)
            if gone is not None:
                self.retained_bytes -= gone.log.nbytes
                if gone.record.client_id is not None:
                    self.client_ids.pop((gone.record.tenant, gone.record.client_id), None)

    def save(self, record: TaskRecord) -> None:
        """Every change of a task's state passes here: the database, then the observers
        (the fleet events feed) are told."""
        if self.writer:
            self.writer.task(record)
        for observer in self.observers:
            observer(record)
