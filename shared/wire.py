"""The wire contract between orchestratord, its workers and its clients: defined once, imported
by both daemons (specs/orchestrator.md, specs/worker.md, specs/openapi/).

Types only: names of events and states as `Literal`s, bodies as `TypedDict`s. Changing a name
here is a protocol change, and mypy shows every place that reads or writes it.
"""

from __future__ import annotations

from typing import Final, Literal, NotRequired, TypedDict

Priority = Literal["interactive", "batch"]
PRIORITIES: Final[tuple[Priority, ...]] = ("interactive", "batch")

Backend = Literal["cpu", "cuda", "metal"]
Pooling = Literal["mean", "cls", "last"]  # how a worker's model pools embeddings (WRK-111)

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
# orchestratord) share these names; `end` and `error` are terminal. `failover` is a task
# stream's only (ORCH-382).
EventName = Literal["queued", "started", "token", "failover", "end", "error"]
EVENT_NAMES: Final[tuple[EventName, ...]] = (
    "queued",
    "started",
    "token",
    "failover",
    "end",
    "error",
)
TERMINAL_EVENTS: Final[frozenset[str]] = frozenset({"end", "error"})

# Why a job, and so a task, ended: an `end` event's `stop_reason` (WRK-023, ORCH-022).
StopReason = Literal["MAX_TOKENS", "EOS", "STOP_SEQUENCE", "CANCELLED"]
STOP_REASONS: Final[tuple[StopReason, ...]] = ("MAX_TOKENS", "EOS", "STOP_SEQUENCE", "CANCELLED")
TaskStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TASK_STATUSES: Final[tuple[TaskStatus, ...]] = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)

# --- a job stream: worker -> orchestratord (POST /execute, WRK-023; specs/openapi/worker.yaml)


class JobStartedData(TypedDict):
    job_id: str
    model: str
    prompt_tokens: int


class TopLogprob(TypedDict):
    """OpenAI's shape: one alternative at a token's position."""

    token: str
    bytes: list[int]
    logprob: float


class TokenLogprob(TypedDict):
    """OpenAI's ChatCompletionTokenLogprob: a generated token and the most likely ones (WRK-134)."""

    token: str
    bytes: list[int]
    logprob: float
    top_logprobs: list[TopLogprob]


class TokenData(TypedDict):
    """A `token` event, in both streams (orchestratord passes the worker's bytes through)."""

    t: str
    i: int
    logprobs: NotRequired[list[TokenLogprob]]  # only when the job asked (WRK-134)
    index: NotRequired[int]  # the choice, only when the job asked for n > 1 (WRK-140)


class JobTokenData(TokenData):
    """A worker's `token` event: a task's, plus, only when the job asked, the ids of the tokens
    whose text `t` carries (WRK-161; always the last member). orchestratord keeps them for a
    failover and strips them before the event reaches the task's stream (ORCH-380)."""

    ids: NotRequired[list[int]]


class ChoiceEnd(TypedDict):
    """How one choice of an n > 1 job ended (WRK-140)."""

    index: int
    stop_reason: StopReason
    tokens_out: int


class JobEndData(TypedDict):
    tokens_out: int  # all choices together
    prompt_tokens: int
    prompt_tokens_cached: int  # WRK-100
    ttft_ms: float | None
    decode_time_ms: float
    stop_reason: StopReason  # choice 0's (the job's, when n = 1)
    choices: NotRequired[list[ChoiceEnd]]  # only when the job asked for n > 1 (WRK-140)


class JobErrorData(TypedDict):
    code: str
    message: str
    retriable: NotRequired[bool]  # WRK-005: set on WORKER_RESET (the worker is stopping)


# --- a task stream: orchestratord -> client (ORCH-020; specs/openapi/orchestrator.yaml) ------


class WaitingFor(TypedDict):
    """The plan's action a queued task waits for: a replica of its model starting (ORCH-361)."""

    action_id: str
    pool: str
    reason: str


class QueuedData(TypedDict):
    queue_position: int | None
    waiting_for: NotRequired[WaitingFor]


class StartedData(TypedDict):
    worker_id: str
    queue_ms: int
    prompt_tokens: NotRequired[int]  # as the worker counted it; absent for embeddings
    # Prompt tokens the cache index expected the worker to hold (ORCH-404); absent: not asked.
    cached_tokens_predicted: NotRequired[int]


class EndData(TypedDict):
    tokens_out: int
    ttft_ms: float | None
    decode_time_ms: float | None
    stop_reason: StopReason
    prompt_tokens: NotRequired[int]
    prompt_tokens_cached: NotRequired[int]  # WRK-100
    cached_tokens_predicted: NotRequired[int]  # ORCH-404, as in `started`
    embeddings: NotRequired[list[list[float]]]  # an embeddings task's vectors (ORCH-230)
    choices: NotRequired[list[ChoiceEnd]]  # a task of n > 1 choices: how each ended (ORCH-270)
    failovers: NotRequired[int]  # times the task resumed on another worker, when any (ORCH-382)


FailoverReason = Literal[
    "connection_lost", "read_timeout", "worker_reset", "worker_dead", "drained"
]
FAILOVER_REASONS: Final[tuple[FailoverReason, ...]] = (
    "connection_lost",
    "read_timeout",
    "worker_reset",
    "worker_dead",
    "drained",
)


class FailoverData(TypedDict):
    """A task stream's `failover` event (ORCH-382): its worker broke after `tokens_out` tokens
    and the task resumes on another; the tokens that follow continue the text. Ignorable."""

    worker_id: str  # the worker that broke
    reason: FailoverReason
    message: str
    tokens_out: int  # tokens the client has, the point the next worker resumes from
    failovers: int  # this task's failovers so far, this one included


class ErrorData(TypedDict):
    code: str
    message: str
    retriable: bool


# --- the registry: worker -> orchestratord, and the worker's own endpoints -----------------


class RegisterBody(TypedDict):
    """POST /v2/workers/register (worker -> orchestratord)."""

    worker_id: str
    url: str
    model: str
    slots_total: int
    backend: NotRequired[str]
    pool: NotRequired[str]
    n_ctx: NotRequired[int]


class PrefixCacheStats(TypedDict):
    """A worker's prefix-cache use since start (WRK-103)."""

    lookups: int
    hits: int
    tokens_reused: int
    prompt_tokens: int
    cached_tokens: int


class EmbeddingsStatus(TypedDict):
    """Whether a worker's model can embed (`GET /health` and heartbeats, WRK-111)."""

    available: bool
    pooling: Pooling | None  # None: the model cannot embed
    reason: str  # why, either way


class KvBlockReport(TypedDict):
    """What a worker's KV cache holds, as chained hashes of full token blocks (WRK-170..172):
    a full list (`full`) or the changes since the report numbered `seq - 1` of `epoch`."""

    block_size: int
    epoch: str  # new per worker process: a new epoch replaces all the old one said
    seq: int  # one more than the previous report of the epoch; a gap asks for a full one
    full: bool
    stored: list[int]
    evicted: list[int]


class HeartbeatReply(TypedDict):
    """orchestratord's answer to a heartbeat."""

    ok: bool
    kv_resync: NotRequired[bool]  # ORCH-401: send the full `kv_blocks` next


class HeartbeatBody(TypedDict):
    """POST /v2/workers/{id}/heartbeat (worker -> orchestratord); orchestratord takes a
    missing `state` as ready and a missing `slots_busy` as 0."""

    slots_total: int
    state: NotRequired[WorkerStatus]
    slots_busy: NotRequired[int]
    prefix_cache: NotRequired[PrefixCacheStats]  # WRK-103
    embeddings: NotRequired[EmbeddingsStatus]  # WRK-111: orchestratord routes embeddings by it
    kv_blocks: NotRequired[KvBlockReport]  # WRK-171: feeds orchestratord's cache index


class Health(TypedDict):
    """A worker's GET /health (WRK-060); heartbeats carry part of it."""

    status: WorkerStatus
    model: str
    backend: Backend
    slots_total: int
    slots_busy: int
    queued: int
    n_ctx: int
    worker_id: str
    prefix_cache: PrefixCacheStats
    embeddings: EmbeddingsStatus


class CancelReply(TypedDict):
    """The worker's POST /cancel answer (WRK-050)."""

    job_id: str
    state: Literal["cancelled", "unknown"]
    tokens_emitted: int
