"""The values a policy sees and returns, and the seam to the daemon's metrics.

The wire shapes of specs/policy.md (what orchestratord hands to a Starlark policy, never the
prompt, and the decision it gets back) are the domain's (orchestratord.domain.views), re-exported
here; this module adds the policy's own: its functions, why a call fell back, the observer it
reports to, and the error a policy that cannot be loaded raises.
"""

from __future__ import annotations

from typing import Literal, Protocol

from orchestratord.domain.views import (
    ACCEPT,
    CLUSTER_KEYS,
    TASK_KEYS,
    WORKER_KEYS,
    AdmitDecision,
    ClusterView,
    PolicyWorkerState,
    QueueDepth,
    TaskView,
    WorkerView,
)
from shared.problem import FieldError, InvalidParams

__all__ = [
    "ACCEPT",
    "CLUSTER_KEYS",
    "TASK_KEYS",
    "WORKER_KEYS",
    "AdmitDecision",
    "ClusterView",
    "FallbackReason",
    "PolicyError",
    "PolicyFunction",
    "PolicyObserver",
    "PolicyWorkerState",
    "QueueDepth",
    "TaskView",
    "WorkerView",
]

PolicyFunction = Literal["admit", "schedule", "plan"]
FallbackReason = Literal["error", "timeout", "bad_return", "bad_input"]
"""Why a call fell back to the built-in policy: the `reason` label of the fallback metric."""


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
