"""Admission, scheduling and scaling (plan) policies in Starlark: the engine (engine.py), how a
policy is compiled and checked (compile.py, checks.py, fleet_plan.py), the values it sees
(types.py, re-exporting domain/views.py) and the breaker that sets a failing one aside
(breaker.py)."""

from orchestratord.policy.engine import (
    AdmitDecision,
    ClusterView,
    PolicyEngine,
    PolicyError,
    PolicyHolder,
    PolicyObserver,
    TaskView,
    WorkerView,
    builtin_source,
)

__all__ = [
    "AdmitDecision",
    "ClusterView",
    "PolicyEngine",
    "PolicyError",
    "PolicyHolder",
    "PolicyObserver",
    "TaskView",
    "WorkerView",
    "builtin_source",
]
