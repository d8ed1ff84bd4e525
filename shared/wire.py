"""The wire contract between orchestratord, its workers and its clients: defined once, imported
by both daemons (specs/orchestrator.md, specs/worker.md, specs/openapi/).

Types only: names of events and states as `Literal`s, bodies as `TypedDict`s. Changing a name
here is a protocol change, and mypy shows every place that reads or writes it.
"""

from __future__ import annotations

from typing import Final, Literal, NotRequired, TypedDict

Priority = Literal["interactive", "batch"]
PRIORITIES: Final[tuple[Priority, ...]] = ("interactive", "batch")

# What a worker reports about itself (GET /health, heartbeats).
WorkerStatus = Literal["loading", "ready", "draining", "failed"]
WORKER_STATUSES: Final[frozenset[str]] = frozenset({"loading", "ready", "draining", "failed"})
# What orchestratord says of a worker: its report, or what heartbeats (or their absence) tell.
# `drained`: orchestratord was asked to drain it (POST /v2/workers/{id}/drain) and no task of
# ours runs there any more (specs/fleet.md FLT-030).
WorkerState = Literal[
    "ready", "loading", "draining", "drained", "failed", "stale", "unverified", "dead"
]
WORKER_STATES: Final[tuple[WorkerState, ...]] = (
    "ready",
    "loading",
    "draining",
    "drained",
    "failed",
    "stale",
    "unverified",
    "dead",
)

# The events of a task stream (orchestratord -> client) and of a job stream (worker ->
# orchestratord) share these names; `end` and `error` are terminal.
EventName = Literal["queued", "started", "token", "end", "error"]
EVENT_NAMES: Final[tuple[EventName, ...]] = ("queued", "started", "token", "end", "error")
TERMINAL_EVENTS: Final[frozenset[str]] = frozenset({"end", "error"})

StopReason = Literal["EOS", "MAX_TOKENS", "STOP", "CANCELLED"]
TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TASK_STATUSES: Final[tuple[TaskStatus, ...]] = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)


class QueuedData(TypedDict):
    queue_position: int | None


class StartedData(TypedDict):
    worker_id: NotRequired[str]  # orchestratord's stream
    job_id: NotRequired[str]  # the worker's stream
    model: NotRequired[str]
    queue_ms: NotRequired[int]
    prompt_tokens: NotRequired[int]


class TokenData(TypedDict):
    t: str
    i: int


class EndData(TypedDict):
    tokens_out: int
    ttft_ms: float | None
    decode_time_ms: float | None
    stop_reason: str
    prompt_tokens: NotRequired[int]


class ErrorData(TypedDict):
    code: str
    message: str
    retriable: NotRequired[bool]


class RegisterBody(TypedDict):
    """POST /v2/workers/register (worker -> orchestratord)."""

    worker_id: str
    url: str
    model: str
    slots_total: int
    backend: NotRequired[str]
    pool: NotRequired[str]
    n_ctx: NotRequired[int]


class HeartbeatBody(TypedDict):
    """POST /v2/workers/{id}/heartbeat (worker -> orchestratord)."""

    state: WorkerStatus
    slots_total: int
    slots_busy: int


class CancelReply(TypedDict):
    """The worker's POST /cancel answer."""

    job_id: str
    state: Literal["cancelled", "unknown"]
    tokens_emitted: int
