"""The once-a-second picture of the fleet on `GET /v2/events`, pure (the clock passed in).

- `LatencyWindow`: TTFT and queue-time samples of the last `window_ms`, as percentiles.
- `ThroughputMeter`: live tokens per second per worker, from cumulative token counters
  (differences between two ticks), so the relay's hot path only increments a counter.
- `WorkerWatch`: the worker changes since the last tick, as `worker` events
  (up, down, drained, state).
- `snapshot`: the `metrics` event's data.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypedDict

WINDOW_MS = 5 * 60 * 1000
MAX_SAMPLES = 20_000
PERCENTILES = (50, 90, 99)
DOWN_STATES = frozenset({"dead", "stale", "failed"})

WorkerChange = Literal["up", "down", "drained", "state", "removed"]


class Percentiles(TypedDict):
    count: int
    p50: float | None
    p90: float | None
    p99: float | None


class LatencyWindow:
    """Samples (ms) with their time; percentiles over the ones younger than `window_ms`.

    The newest `max_samples` are kept in a ring of two flat arrays made at the start: every
    task feeds the windows whether or not anyone reads them, and samples as Python objects
    (a tuple, an int, a float: ~120 bytes each) made orchestratord's memory grow by about
    5 MB over its first 20,000 tasks; the arrays take 16 bytes a sample, from the start.
    """

    def __init__(self, window_ms: int = WINDOW_MS, max_samples: int = MAX_SAMPLES) -> None:
        if max_samples < 1:
            raise ValueError("max_samples must be at least 1")
        self.window_ms = window_ms
        self._times = array("q", bytes(8 * max_samples))
        self._values = array("d", bytes(8 * max_samples))
        self._first = 0  # index of the oldest sample
        self._count = 0

    def add(self, now_ms: int, value_ms: float) -> None:
        size = len(self._times)
        i = self._first + self._count
        if i >= size:
            i -= size
        self._times[i] = now_ms
        self._values[i] = value_ms
        if self._count < size:
            self._count += 1
        else:  # full: the oldest goes
            self._first = self._first + 1 if self._first + 1 < size else 0

    def _prune(self, now_ms: int) -> None:
        horizon = now_ms - self.window_ms
        size = len(self._times)
        while self._count and self._times[self._first] < horizon:
            self._first = self._first + 1 if self._first + 1 < size else 0
            self._count -= 1

    def percentiles(self, now_ms: int) -> Percentiles:
        """Nearest-rank percentiles of the window; None when it holds no sample."""
        self._prune(now_ms)
        end = self._first + self._count
        values = self._values[self._first : end]
        if end > len(self._values):  # the window wraps around the ring's end
            values += self._values[: end - len(self._values)]
        ordered = sorted(values)
        out: Percentiles = {"count": len(ordered), "p50": None, "p90": None, "p99": None}
        if ordered:
            for p in PERCENTILES:
                rank = max(1, -(-p * len(ordered) // 100))  # ceil(p/100 * n)
                out[f"p{p}"] = round(ordered[rank - 1], 3)  # type: ignore[literal-required]
        return out


class ThroughputMeter:
    """Tokens per second per key from cumulative counters read at each tick."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}

    def rates(self, now_ms: int, totals: Mapping[str, int]) -> dict[str, float]:
        """Rate since the previous call for each key (0.0 the first time a key is seen)."""
        out: dict[str, float] = {}
        for key, total in totals.items():
            prev = self._last.get(key)
            if prev is None or now_ms <= prev[0] or total < prev[1]:
                out[key] = 0.0
            else:
                out[key] = round((total - prev[1]) * 1000.0 / (now_ms - prev[0]), 2)
        self._last = {k: (now_ms, t) for k, t in totals.items()}
        return out


class WorkerEvent(TypedDict):
    change: WorkerChange
    id: str
    pool: str
    model: str
    state: str


class WorkerWatch:
    """Turns successive worker lists into change events (the first list is the baseline:
    a new subscriber learns the fleet from the snapshot, not from a burst of `up`)."""

    def __init__(self) -> None:
        self._states: dict[str, tuple[str, str, str]] | None = None

    def changes(self, workers: Iterable[Mapping[str, Any]]) -> list[WorkerEvent]:
        current = {
            str(w["id"]): (str(w["state"]), str(w["pool"]), str(w["model"])) for w in workers
        }
        before, self._states = self._states, current
        if before is None:
            return []
        out: list[WorkerEvent] = []
        for wid, (state, pool, model) in current.items():
            old = before.get(wid)
            if old is not None and old[0] == state:
                continue
            out.append(
                {
                    "change": _change(state),
                    "id": wid,
                    "pool": pool,
                    "model": model,
                    "state": state,
                }
            )
        for wid, (state, pool, model) in before.items():
            if wid not in current:
                out.append(
                    {"change": "removed", "id": wid, "pool": pool, "model": model, "state": state}
                )
        return out


def _change(new: str) -> WorkerChange:
    if new == "ready":
        return "up"
    if new in DOWN_STATES:
        return "down"
    if new == "drained":
        return "drained"
    return "state"


class Queued(Protocol):
    """What the snapshot needs of a queued task (orchestratord's QueueEntry has it)."""

    @property
    def priority(self) -> str: ...
    @property
    def enqueued_ms(self) -> int: ...


@dataclass(frozen=True)
class LaneEntry:
    priority: str
    enqueued_ms: int


def lanes(entries: Iterable[Queued], lane_names: Sequence[str], now_ms: int) -> dict[str, Any]:
    """Per lane: depth and the oldest wait in ms (None when empty)."""
    depth = dict.fromkeys(lane_names, 0)
    oldest: dict[str, int] = {}
    for e in entries:
        depth[e.priority] = depth.get(e.priority, 0) + 1
        oldest[e.priority] = min(oldest.get(e.priority, e.enqueued_ms), e.enqueued_ms)
    return {
        lane: {
            "depth": n,
            "oldest_wait_ms": (now_ms - oldest[lane]) if lane in oldest else None,
        }
        for lane, n in depth.items()
    }


def snapshot(
    now_ms: int,
    workers: Sequence[Mapping[str, Any]],
    live_tps: Mapping[str, float],
    lane_figures: Mapping[str, Any],
    ttft: Percentiles,
    queue_time: Percentiles,
    policy: Mapping[str, Any],
    cache_index: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The `metrics` event: per worker slots, live tok/s, cache use and heartbeat age;
    per lane depth and oldest wait; TTFT and queue-time percentiles; the policy in force."""
    rows = []
    for w in workers:
        wid = str(w["id"])
        hb = w.get("last_heartbeat_ms")
        rows.append(
            {
                "id": wid,
                "pool": w.get("pool"),
                "model": w.get("model"),
                "backend": w.get("backend"),
                "state": w.get("state"),
                "slots_busy": w.get("slots_busy"),
                "slots_total": w.get("slots_total"),
                "tokens_per_s": live_tps.get(wid, 0.0),
                "decode_tokens_per_s": w.get("tokens_per_s"),
                "cache_use": w.get("cache_use"),
                "heartbeat_age_ms": (now_ms - hb) if isinstance(hb, int) and hb > 0 else None,
            }
        )
    rows.sort(key=lambda r: (str(r["pool"]), r["id"]))
    return {
        "now_ms": now_ms,
        "workers": rows,
        "tokens_per_s": round(sum(live_tps.values()), 2),
        "lanes": dict(lane_figures),
        "ttft_ms": ttft,
        "queue_ms": queue_time,
        "policy": dict(policy),
        # What the cache index of the workers' KV blocks holds, against its bound (ORCH-403).
        "cache_index": dict(cache_index) if cache_index is not None else None,
    }
