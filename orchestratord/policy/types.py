"""The values a policy sees and returns, and the seam to the daemon's metrics.

These are the wire shapes of specs/policy.md: what orchestratord hands to a Starlark policy
(never the prompt), the decision it gets back, and the observer it reports to.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict

from shared.problem import FieldError, InvalidParams
from shared.wire import Priority

# A worker's state as a policy sees it (specs/policy.md): `busy` is a ready worker with no room.
PolicyWorkerState = Literal["ready", "busy", "draining", "stale", "dead"]
PolicyFunction = Literal["admit", "schedule"]
FallbackReason = Literal["error", "timeout", "bad_return", "bad_input"]
"""Why a call fell back to the built-in policy: the `reason` label of the fallback metric."""


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
    # schema, and per-token logprobs.
    constrained: bool
    logprobs: bool


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


class PolicyObserver(Protocol):
    """Where the engine reports each call's cost and each fallback (metrics, in the daemon)."""

    def observe(self, fn: str, seconds: float) -> None: ...

    def fallback(self, fn: str, reason: str) -> None: ...


class PolicyError(InvalidParams):
    """A policy file that cannot be used: unreadable, unparsable, lint error, or failed dry run.

    Raised only while loading or validating; a running engine never raises. As an ApiError it
    renders as 400 INVALID_PARAMS problem+json from the admin reload endpoint, with one entry in
    `errors` per problem found.
    """

    def __init__(self, name: str, problems: list[str]) -> None:
        detail = f"policy {name} rejected: " + "; ".join(problems)
        errors: list[FieldError] = [{"field": "policy", "message": p} for p in problems]
        super().__init__(detail, errors=errors)
        self.name = name
        self.problems = problems
