"""The diff from desired state and planned replicas to actions (FLT-020..FLT-027). Pure.

An action is one precise pool command that `llorch fleet apply` runs over SSH:

    ensure_model  model M on pool P from its source (download, import, or check the catalog)
    spawn         worker W of model M on pool P (after ensure_model on P)
    drain         worker W: no new tasks, running ones finish (POST /v2/workers/W/drain)
    stop          worker W on pool P, once drained (llorch-pool worker stop W)

Each carries its reason. Ids are derived from what the action does (`spawn:W`), so the same
gap gives the same actions on every call: the lease on an id is what keeps two concurrent
applies from running it twice, and a spawned worker's id is fixed by the plan, so a spawn
that already happened is seen as a registered (or still starting) replica, not repeated.
Only models in the desired state are managed; a worker of any other model is left alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypedDict

from orchestratord.fleet.desired import FleetSpec, ModelSpec

ActionKind = Literal["ensure_model", "spawn", "drain", "stop"]
LIVE_STATES = frozenset({"ready", "loading", "unverified", "stale"})
"""States of a replica that counts: it takes tasks or soon will. Draining, drained, failed and
dead workers do not count; a failed or dead one is the pool's `worker cleanup`'s to remove."""


class Action(TypedDict):
    id: str
    kind: ActionKind
    model: str
    pool: str
    worker_id: str | None
    source: str | None
    backend: str
    slots: int
    ctx: int
    after: str | None  # an action that must succeed first (spawn after ensure_model)
    reason: str


@dataclass(frozen=True, slots=True)
class ActualWorker:
    """What the diff needs to know of one registered worker."""

    id: str
    model: str
    pool: str
    state: str  # as GET /v2/workers shows it, plus "drained" when a drain has finished
    busy: int  # tasks running on it
    registered_ms: int
    slots: int = 1
    tokens_per_s: float = 0.0  # per stream, as the registry measured it


def worker_id_for(model: str, pool: str, n: int) -> str:
    """The id of the n-th fleet-managed replica of `model` on `pool` (valid for llorch-pool)."""
    return f"{model}.{pool}.{n}"[:128]


def _spawn_ids(
    spec: ModelSpec, taken: set[str], count: int, per_pool: dict[str, int]
) -> list[tuple[str, str]]:
    """(pool, worker id) for `count` new replicas: each on the pool with fewest replicas of the
    model, the earlier in `pools` on a tie, with the lowest free index there."""
    out: list[tuple[str, str]] = []
    for _ in range(count):
        pool = min(spec.pools, key=lambda p: (per_pool.get(p, 0), spec.pools.index(p)))
        n = 0
        while worker_id_for(spec.id, pool, n) in taken:
            n += 1
        wid = worker_id_for(spec.id, pool, n)
        taken.add(wid)
        per_pool[pool] = per_pool.get(pool, 0) + 1
        out.append((pool, wid))
    return out


def _action(
    kind: ActionKind,
    spec: ModelSpec,
    pool: str,
    wid: str | None,
    reason: str,
    after: str | None = None,
) -> Action:
    target = wid if wid is not None else f"{spec.id}@{pool}"
    return {
        "id": f"{kind}:{target}",
        "kind": kind,
        "model": spec.id,
        "pool": pool,
        "worker_id": wid,
        "source": str(spec.source) if kind == "ensure_model" else None,
        "backend": spec.backend,
        "slots": spec.slots,
        "ctx": spec.ctx,
        "after": after,
        "reason": reason,
    }


def _drain_order(spec: ModelSpec, w: ActualWorker) -> tuple[bool, int, int, int, str]:
    """Which replica to drain first: one outside the desired pools, then the least busy, then
    the one on the later pool in `pools` (the operator's order of preference), the newest."""
    rank = spec.pools.index(w.pool) if w.pool in spec.pools else len(spec.pools)
    return (w.pool in spec.pools, w.busy, -rank, -w.registered_ms, w.id)


def diff(
    spec: FleetSpec,
    replicas: Mapping[str, int],
    reasons: Mapping[str, str],
    workers: Iterable[ActualWorker],
    starting: Iterable[Action] = (),
) -> list[Action]:
    """Actions that close the gap between `replicas` (the plan) and `workers` (actual).

    `starting` are spawn actions leased or done whose worker has not registered yet: they
    count as replicas, so a slow start is never spawned twice.
    """
    by_model: dict[str, list[ActualWorker]] = {}
    all_ids: set[str] = set()
    for w in workers:
        by_model.setdefault(w.model, []).append(w)
        all_ids.add(w.id)
    spawning: dict[str, list[Action]] = {}
    for a in starting:
        if a["kind"] == "spawn" and a["worker_id"] is not None and a["worker_id"] not in all_ids:
            spawning.setdefault(a["model"], []).append(a)
    all_ids.update(a["worker_id"] or "" for group in spawning.values() for a in group)
    out: list[Action] = []
    for m in spec.models:
        mine = by_model.get(m.id, [])
        live = [w for w in mine if w.state in LIVE_STATES]
        pending = spawning.get(m.id, [])
        target = replicas.get(m.id, len(live) + len(pending))
        reason = reasons.get(m.id, "")
        have = len(live) + len(pending)
        per_pool: dict[str, int] = {}
        for w in live:
            per_pool[w.pool] = per_pool.get(w.pool, 0) + 1
        for a in pending:
            per_pool[a["pool"]] = per_pool.get(a["pool"], 0) + 1
        if have < target:
            why = f"scale {m.id} from {have} to {target} replicas: {reason}"
            for pool, wid in _spawn_ids(m, all_ids, target - have, per_pool):
                ensure = _action(
                    "ensure_model", m, pool, None, f"{m.id} is needed on {pool} for {wid}"
                )
                if ensure["id"] not in {a["id"] for a in out}:
                    out.append(ensure)
                out.append(_action("spawn", m, pool, wid, why, after=ensure["id"]))
        elif have > target:
            why = f"scale {m.id} from {have} to {target} replicas: {reason}"

            order = sorted(live, key=lambda w, spec=m: _drain_order(spec, w))  # type: ignore[misc]
            for w in order[: have - target]:
                out.append(_action("drain", m, w.pool, w.id, why))
        for w in mine:
            if w.state == "drained" or (w.state == "draining" and w.busy == 0):
                out.append(
                    _action("stop", m, w.pool, w.id, f"{w.id} is drained: no task is running on it")
                )
    return out
