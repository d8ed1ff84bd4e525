"""What counts as a valid answer from a policy, and the inputs its dry run is given."""

from __future__ import annotations

from collections.abc import Sequence

from orchestratord.policy.types import (
    ACCEPT,
    AdmitDecision,
    ClusterView,
    FallbackReason,
    PolicyWorkerState,
    TaskView,
    WorkerView,
)

_ADMIT_KEYS = frozenset({"accept", "reason", "retry_after_ms"})


class CallFailed(Exception):
    """One call of a policy function failed; `reason` labels the fallback metric."""

    def __init__(self, reason: FallbackReason, message: str) -> None:
        super().__init__(message)
        self.reason: FallbackReason = reason
        self.message = message


def eligible(worker: WorkerView, model: str) -> bool:
    """A worker a task may be placed on: same model, healthy, a free slot."""
    return (
        worker["model"] == model
        and worker["state"] in ("ready", "busy")
        and worker["slots_busy"] < worker["slots_total"]
    )


def admit_decision(value: object) -> AdmitDecision:
    """admit()'s return value as a decision, or CallFailed("bad_return"). The adapter hands
    back {"accept": True} as ACCEPT itself (compile._adapter_source)."""
    if value is ACCEPT:
        return ACCEPT
    if not isinstance(value, dict) or not isinstance(value.get("accept"), bool):
        raise CallFailed("bad_return", f'must return {{"accept": True|False, ...}}, got {value!r}')
    unknown = set(value) - _ADMIT_KEYS
    if unknown:
        raise CallFailed("bad_return", f"returned unknown keys {sorted(unknown)}")
    reason, retry = value.get("reason"), value.get("retry_after_ms")
    if reason is not None and not isinstance(reason, str):
        raise CallFailed("bad_return", f"reason must be a string or None, got {reason!r}")
    if retry is not None and (type(retry) is not int or retry < 0):
        raise CallFailed("bad_return", f"retry_after_ms must be an int >= 0, got {retry!r}")
    return AdmitDecision(value["accept"], reason, retry)


def worker_choice(value: object, task: TaskView, workers: Sequence[WorkerView]) -> str | None:
    """schedule()'s return value: None, or the id of an eligible worker; else CallFailed."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise CallFailed("bad_return", f"must return a worker id or None, got {value!r}")
    for w in workers:
        if w["id"] == value:
            if eligible(w, task["model"]):
                return value
            break
    raise CallFailed(
        "bad_return",
        f"returned {value!r}, which is not an eligible worker "
        "(listed, same model, ready or busy, with a free slot)",
    )


def dry_run_inputs() -> dict[str, tuple[TaskView, list[WorkerView], ClusterView]]:
    """Synthetic cases, by description, that every policy function must get through."""

    def worker(i: int, pool: str, model: str, state: PolicyWorkerState, busy: int) -> WorkerView:
        return {
            "id": f"dry-run-worker-{i}",
            "pool": pool,
            "model": model,
            "backend": "cpu",
            "state": state,
            "slots_total": 2,
            "slots_busy": busy,
            "tokens_per_s": 10.0 * i,
            "last_heartbeat_ms": 1_700_000_000_000,
            "recent_starts": 3 * i,
            "cached_tokens": 640 if i == 3 else 0,
            "recent_sessions": ["s-1"] if i == 2 else [],
            "recent_prefixes": ["0" * 16] if i == 3 else [],
        }

    task: TaskView = {
        "id": "dry-run-task",
        "model": "dry-run-model",
        "priority": "interactive",
        "session_id": None,
        "max_tokens": 16,
        "prompt_tokens": 8,
        "wait_ms": 0,
        "prefix_hash": "0" * 16,
        "tenant": None,
        "constrained": False,
        "logprobs": False,
        "tools": 0,
        "n": 1,
        "tenant_limits": None,
        "tenant_usage": {},
        "failovers": 0,
    }
    batch: TaskView = {
        **task,
        "priority": "batch",
        "session_id": "s-1",
        "tenant": "t-1",
        # A tenant with limits (POL-100): a policy that reads them is dry-run with both shapes.
        "tenant_limits": {
            "concurrency": 8,
            "rpm": 60,
            "tpm": None,
            "daily_tokens": 1_000_000,
            "monthly_tokens": None,
            "weight": 1.0,
        },
        "tenant_usage": {
            "open": 1,
            "requests": 3,
            "tokens": 120,
            "window_s": 60.0,
            "tokens_today": 5000,
            "tokens_month": 90000,
        },
    }
    workers = [
        worker(1, "pool-a", "dry-run-model", "ready", 0),
        worker(2, "pool-b", "dry-run-model", "ready", 1),
        worker(3, "pool-a", "dry-run-model", "busy", 2),
        worker(4, "pool-b", "dry-run-model", "draining", 0),
        worker(5, "pool-a", "other-model", "ready", 0),
    ]
    cluster: ClusterView = {
        "queue_depth": {"interactive": 2, "batch": 5},
        "now_ms": 1_700_000_000_500,
        "workers": {"ready": 3, "busy": 1, "draining": 1},
        "running_by_tenant": {"t-1": 1},
    }
    idle: ClusterView = {
        "queue_depth": {"interactive": 0, "batch": 0},
        "now_ms": 1_700_000_000_500,
        "workers": {},
        "running_by_tenant": {},
    }
    return {
        "an interactive task and 5 workers": (task, workers, cluster),
        "a batch task with a session and a tenant": (batch, workers, cluster),
        "no workers": (task, [], idle),
    }
