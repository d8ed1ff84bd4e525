"""What the domain hands a policy and gets back: the views of a task, a worker and the
cluster (never the prompt), and an admission decision (specs/policy.md).

They live in the domain, the lowest layer, because the domain builds them (the registry's
worker view, the scheduler's task and cluster views); the policy engine above reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, TypedDict

from shared.wire import Priority

# A worker's state as a policy sees it (specs/policy.md): `busy` is a ready worker with no room.
PolicyWorkerState = Literal["ready", "busy", "draining", "stale", "dead"]


class TaskView(TypedDict):
    id: str
    model: str
    priority: Priority
    session_id: str | None
    max_tokens: int
    prompt_tokens: int
    wait_ms: int
    prefix_hash: str
    tenant: str | None
    # What the task asks of the worker beyond sampling (ORCH-244): an output grammar or JSON
    # schema, per-token logprobs, and how many functions it offers the model (ORCH-250).
    constrained: bool
    logprobs: bool
    tools: int
    n: int  # choices: slots the task takes on its worker (ORCH-270)
    # The task's tenant's limits (None: none set) and what it used (POL-100,
    # domain/quotas.py): open tasks, requests and tokens in the window, tokens today and
    # this month.
    tenant_limits: dict[str, Any] | None
    tenant_usage: dict[str, int | float]
    failovers: int  # times it moved on after its worker broke mid-stream (POL-115)


class WorkerView(TypedDict):
    """A worker as a policy sees it."""

    id: str
    pool: str
    model: str
    backend: str
    state: PolicyWorkerState
    slots_total: int
    slots_busy: int
    tokens_per_s: float
    last_heartbeat_ms: int
    # Tasks started on it in the last minute (ORCH-412): its share of the model's recent work.
    recent_starts: int
    # Prompt tokens of this task the worker holds in its KV cache, by the cache index: the
    # longest prefix of the prompt's token blocks it reported (ORCH-400, POL-120).
    cached_tokens: int
    # The sessions and prompt prefixes (TaskView.prefix_hash) it served last, newest last:
    # its prefix cache likely still holds them (ORCH-235).
    recent_sessions: list[str]
    recent_prefixes: list[str]


class QueueDepth(TypedDict):
    interactive: int
    batch: int


class ClusterView(TypedDict):
    queue_depth: QueueDepth
    now_ms: int
    workers: dict[str, int]
    running_by_tenant: dict[str, int]


TASK_KEYS: tuple[str, ...] = tuple(TaskView.__annotations__)
WORKER_KEYS: tuple[str, ...] = tuple(WorkerView.__annotations__)
CLUSTER_KEYS: tuple[str, ...] = tuple(ClusterView.__annotations__)


@dataclass(frozen=True, slots=True)
class AdmitDecision:
    """What admit() decided. A rejection becomes 429 ADMISSION_REJECT with Retry-After."""

    accept: bool
    reason: str | None = None
    retry_after_ms: int | None = None


ACCEPT = AdmitDecision(accept=True)
