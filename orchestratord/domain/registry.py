"""The worker registry and slot accounting; pure (no I/O, the clock passed in).

A worker's busy slots are what we dispatched to it (`inflight`) plus the slots it reports busy
beyond those in two heartbeats in a row (`foreign`: work that reached it some other way). So a
freed slot is reusable at once, and work we do not know about still counts.

Liveness follows heartbeats: silent past `stale_ms` -> no new work; past `dead_ms` -> dead.
Workers loaded from the database after a restart are `unverified` until they heartbeat.

Each worker remembers the sessions and prompt prefixes it served last (`RECENT`, newest last):
the policy sees them (`recent_sessions`, `recent_prefixes`) and can send a conversation's next
turn where its prefix is still in the worker's cache (ORCH-235). It also counts the tasks
started on it in the last `STARTS_WINDOW_MS` (`recent_starts`, ORCH-412): what share of a
model's work it has been getting, which its busy slots at one instant do not say.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypedDict

from orchestratord.domain.cacheindex import CacheIndex
from orchestratord.domain.views import PolicyWorkerState, WorkerView
from shared.wire import WORKER_STATUSES, WorkerState, WorkerStatus

REPORTED_STATES = WORKER_STATUSES
# Sessions and prefixes remembered per worker: its cache holds about one conversation per slot,
# and every row a policy reads costs encoding time (POL-080), so a few suffice.
RECENT = 8
# Task starts are counted per worker over this window, in buckets of STARTS_BUCKET_MS: the
# count is a few integers whatever the rate (ORCH-412).
STARTS_WINDOW_MS = 60_000
STARTS_BUCKET_MS = 5_000
# A worker's state as a policy sees it, when not ready (ready is "ready" or "busy" by its room).
_POLICY_STATE: dict[str, PolicyWorkerState] = {
    "dead": "dead",
    "draining": "draining",
    "drained": "draining",
}
__all__ = ["REPORTED_STATES", "Registry", "Worker", "WorkerListing", "WorkerState", "WorkerView"]


class WorkerListing(TypedDict):
    """A worker as `GET /v2/workers` lists it."""

    id: str
    pool: str
    model: str
    backend: str
    state: WorkerState
    url: str
    slots_total: int
    slots_busy: int
    n_ctx: int
    tokens_per_s: float
    last_heartbeat_ms: int


@dataclass(eq=False)
class Worker:
    id: str
    url: str
    model: str
    backend: str = "cpu"
    pool: str = "default"
    slots_total: int = 1
    n_ctx: int = 0
    reported: WorkerStatus = "ready"
    last_heartbeat_ms: int = 0
    registered_ms: int = 0
    verified: bool = True
    dead: bool = False
    inflight: set[str] = field(default_factory=set)
    # Slots beyond one that inflight tasks of n > 1 choices hold, by task (ORCH-270).
    extra: dict[str, int] = field(default_factory=dict)
    foreign: int = 0
    excess_seen: int = 0
    tokens_per_s: float = 0.0
    draining: bool = False  # orchestratord drains it: no new task (FLT-030)
    last_used_ms: int = 0  # when a task on it last ended: the fleet's idle TTL (FLT-061)
    # Tokens relayed from this worker since it first registered: the live tok/s of the fleet
    # events is the difference between two reads (the relay only increments it).
    tokens_relayed: int = 0
    # Whether the model can embed, as its heartbeats say (WRK-111); None: it has not said.
    embeddings: bool | None = None
    recent_sessions: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT))
    recent_prefixes: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT))
    # [bucket, tasks started in it], oldest first: `recent_starts` sums those in the window.
    starts: deque[list[int]] = field(
        default_factory=lambda: deque(maxlen=STARTS_WINDOW_MS // STARTS_BUCKET_MS + 1)
    )

    def started(self, now_ms: int) -> None:
        """Count a task started here at `now_ms` (ORCH-412)."""
        bucket = now_ms // STARTS_BUCKET_MS
        if self.starts and self.starts[-1][0] == bucket:
            self.starts[-1][1] += 1
        else:
            self.starts.append([bucket, 1])

    def recent_starts(self, now_ms: int) -> int:
        """Tasks started here in the buckets that overlap the last STARTS_WINDOW_MS (so over
        the last 60 to 65 s)."""
        oldest = (now_ms - STARTS_WINDOW_MS) // STARTS_BUCKET_MS
        return sum(n for bucket, n in self.starts if bucket >= oldest)

    def remember(self, session_id: str | None, prefix_hash: str) -> None:
        """Note a task served here: its session and prefix move to the newest place."""
        for recent, key in (
            (self.recent_sessions, session_id),
            (self.recent_prefixes, prefix_hash),
        ):
            if key:
                if key in recent:
                    recent.remove(key)
                recent.append(key)

    @property
    def can_embed(self) -> bool:
        """Whether an embeddings task may go here: an unknown answer may (the worker's 400
        then fails the task, INVALID_PARAMS), a no may not."""
        return self.embeddings is not False

    @property
    def held(self) -> int:
        """Slots our own tasks hold: one each, n for a task of n choices (ORCH-270)."""
        return len(self.inflight) + (sum(self.extra.values()) if self.extra else 0)

    @property
    def slots_busy(self) -> int:
        return min(self.slots_total, self.held + self.foreign)

    @property
    def free_slots(self) -> int:
        return max(0, self.slots_total - self.slots_busy)

    def room(self, prefetch: int) -> int:
        """Jobs that may still be sent: free slots plus `prefetch` places in the worker's own
        queue, so a slot that frees there starts the next job without a round trip."""
        return max(0, self.slots_total + prefetch - self.held - self.foreign)

    def state(self, now_ms: int, stale_ms: int) -> WorkerState:
        if self.dead:
            return "dead"
        if not self.verified:
            return "unverified"
        if now_ms - self.last_heartbeat_ms > stale_ms:
            return "stale"
        if self.draining:
            return "draining" if self.inflight else "drained"
        return self.reported

    def listing(self, now_ms: int, stale_ms: int) -> WorkerListing:
        return {
            "id": self.id,
            "pool": self.pool,
            "model": self.model,
            "backend": self.backend,
            "state": self.state(now_ms, stale_ms),
            "url": self.url,
            "slots_total": self.slots_total,
            "slots_busy": self.slots_busy,
            "n_ctx": self.n_ctx,
            "tokens_per_s": round(self.tokens_per_s, 2),
            "last_heartbeat_ms": self.last_heartbeat_ms,
        }

    def view(self, now_ms: int, stale_ms: int, prefetch: int = 0) -> WorkerView:
        """The worker as policies see it: its capacity is its slots plus the places
        orchestratord may use in its queue (`prefetch`); a ready worker with no room is busy."""
        total = self.slots_total + prefetch
        busy = min(total, self.held + self.foreign)
        state = self.state(now_ms, stale_ms)
        return {
            "id": self.id,
            "pool": self.pool,
            "model": self.model,
            "backend": self.backend,
            "state": ("busy" if busy >= total else "ready")
            if state == "ready"
            else _POLICY_STATE.get(state, "stale"),
            "slots_total": total,
            "slots_busy": busy,
            "tokens_per_s": round(self.tokens_per_s, 2),
            "last_heartbeat_ms": self.last_heartbeat_ms,
            "recent_starts": self.recent_starts(now_ms),
            "cached_tokens": 0,  # per task: the scheduler fills it from the cache index
            "recent_sessions": list(self.recent_sessions),
            "recent_prefixes": list(self.recent_prefixes),
        }


class Registry:
    def __init__(
        self, stale_ms: int, dead_ms: int, prefetch: int = 0, *, kv_entries: int = 500_000
    ) -> None:
        self.stale_ms = stale_ms
        self.dead_ms = dead_ms
        self.prefetch = prefetch
        self.workers: dict[str, Worker] = {}
        # Model -> the last heartbeat of a removed worker of it: "served a moment ago" outlives
        # the worker's restart (ORCH-164).
        self.last_seen: dict[str, int] = {}
        # What every worker's KV cache holds, from its heartbeats (ORCH-400).
        self.kv = CacheIndex(kv_entries)

    def register(self, w: Worker, now_ms: int) -> Worker:
        """Add or replace a worker. Jobs in flight on a re-registering worker stay counted."""
        old = self.workers.get(w.id)
        if old is not None:
            w.inflight, w.extra = old.inflight, old.extra
            w.tokens_per_s = old.tokens_per_s
            w.draining = old.draining  # a drain holds until the worker is removed
            w.tokens_relayed = old.tokens_relayed
            w.recent_sessions, w.recent_prefixes = old.recent_sessions, old.recent_prefixes
            w.starts = old.starts
            if w.embeddings is None:
                w.embeddings = old.embeddings
        w.registered_ms = w.registered_ms or now_ms
        w.last_heartbeat_ms = now_ms
        w.verified, w.dead = True, False
        self.workers[w.id] = w
        self.kv.drop_worker(w.id)  # a (re)registered worker reports its whole cache anew
        return w

    def restore(self, workers: Iterable[Worker]) -> None:
        """Load workers kept from a previous run: unverified until they heartbeat."""
        for w in workers:
            w.verified, w.inflight, w.foreign, w.extra = False, set(), 0, {}
            self.workers[w.id] = w

    def heartbeat(
        self,
        worker_id: str,
        state: WorkerStatus,
        slots_total: int,
        slots_busy: int,
        now_ms: int,
        embeddings: bool | None = None,
    ) -> Worker | None:
        """Record a heartbeat; None when the worker is unknown (it must register again)."""
        w = self.workers.get(worker_id)
        if w is None:
            return None
        if embeddings is not None:
            w.embeddings = embeddings
        w.reported = state if state in REPORTED_STATES else "failed"
        w.slots_total = max(0, slots_total)
        # Busy slots beyond our own jobs count only when two heartbeats in a row report them:
        # one report can lag a job that just ended here, and would block a free slot.
        excess = max(0, slots_busy - w.held)
        w.foreign = min(excess, w.excess_seen)
        w.excess_seen = excess
        w.last_heartbeat_ms = now_ms
        w.verified, w.dead = True, False
        return w

    def drain(self, worker_id: str) -> Worker | None:
        """Give the worker no new task; its running ones finish, then it is `drained`.
        Idempotent; None when the worker is unknown."""
        w = self.workers.get(worker_id)
        if w is not None:
            w.draining = True
        return w

    def undrain(self, worker_id: str) -> Worker | None:
        """Undo a drain (ORCH-373): the worker takes new tasks again. Idempotent; None when
        the worker is unknown."""
        w = self.workers.get(worker_id)
        if w is not None:
            w.draining = False
        return w

    def remove(self, worker_id: str) -> Worker | None:
        w = self.workers.pop(worker_id, None)
        self.kv.drop_worker(worker_id)
        if w is not None:
            self.last_seen[w.model] = max(self.last_seen.get(w.model, 0), w.last_heartbeat_ms)
        return w

    def get(self, worker_id: str) -> Worker | None:
        return self.workers.get(worker_id)

    def sweep(self, now_ms: int) -> list[Worker]:
        """Mark workers silent past dead_ms as dead; returns the newly dead."""
        newly: list[Worker] = []
        for w in self.workers.values():
            if not w.dead and now_ms - w.last_heartbeat_ms > self.dead_ms:
                w.dead = True
                newly.append(w)
        return newly

    def usable(self, w: Worker, now_ms: int) -> bool:
        """Whether a worker may receive new work at all (busy or not)."""
        return w.state(now_ms, self.stale_ms) == "ready"

    def candidates(
        self, model: str, now_ms: int, serving: list[Worker] | None = None
    ) -> list[Worker]:
        """Usable workers serving `model`, busy ones included (a policy may wait for one).
        `serving`: what `self.serving(model)` returned, when the caller has it already."""
        listed = self.serving(model) if serving is None else serving
        return [w for w in listed if self.usable(w, now_ms)]

    def reserve(self, worker_id: str, task_id: str, slots: int = 1) -> None:
        w = self.workers[worker_id]
        w.inflight.add(task_id)
        if slots > 1:
            w.extra[task_id] = slots - 1

    def release(self, worker_id: str, task_id: str) -> None:
        w = self.workers.get(worker_id)
        if w is not None:
            w.inflight.discard(task_id)
            w.extra.pop(task_id, None)

    def served(self, worker_id: str, session_id: str | None, prefix_hash: str) -> None:
        w = self.workers.get(worker_id)
        if w is not None:
            w.remember(session_id, prefix_hash)

    def observe_speed(self, worker_id: str, tokens_per_s: float) -> None:
        w = self.workers.get(worker_id)
        if w is not None and tokens_per_s > 0:
            w.tokens_per_s = (
                tokens_per_s if w.tokens_per_s == 0 else (0.8 * w.tokens_per_s + 0.2 * tokens_per_s)
            )

    def serving(self, model: str) -> list[Worker]:
        """Registered workers of `model` that are not dead (loading and stale ones included:
        they may serve it soon)."""
        return [w for w in self.workers.values() if w.model == model and not w.dead]

    def known_models(self) -> list[str]:
        return sorted({w.model for w in self.workers.values() if not w.dead})

    def seen_within(self, model: str, now_ms: int, grace_ms: int) -> bool:
        """Whether a worker of `model` was heard from within the last `grace_ms`, even if it
        died or was removed since (a worker restarting: ORCH-164)."""
        if grace_ms <= 0:
            return False
        beats = [w.last_heartbeat_ms for w in self.workers.values() if w.model == model]
        if model in self.last_seen:
            beats.append(self.last_seen[model])
        return bool(beats) and now_ms - max(beats) <= grace_ms

    def models(self, now_ms: int) -> list[str]:
        return sorted({w.model for w in self.workers.values() if self.usable(w, now_ms)})

    def counts(self, now_ms: int) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in self.workers.values():
            s = w.state(now_ms, self.stale_ms)
            out[s] = out.get(s, 0) + 1
        return out

    def listings(self, now_ms: int) -> list[WorkerListing]:
        return [w.listing(now_ms, self.stale_ms) for w in self.workers.values()]
