"""Admission and scheduling policies in Starlark: the engine (engine.py), how a policy is
compiled and checked (compile.py, checks.py), and the values it sees (types.py)."""

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
