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

Replicas count per desired pool (FLT-060): a live replica of a managed model on a pool its
`pools` do not list is `misplaced`. It keeps serving and is left alone (a hand-spawned worker's
pool is its host name, which no fleet need list: FLT-006), unless the caller asks for misplaced
replicas to be replaced; then each is drained once the placed ones reach the plan's count.

Memory (FLT-066): when a pool has reported its free memory and the model's size, a replica is
only placed where `need_bytes` fits; a model no pool fits gets no spawn and a reason instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypedDict

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
    last_used_ms: int = 0  # when a task of it last ended (0: none yet)


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What a pool reported of one model in its catalog (llorch-pool backends --json)."""

    size_bytes: int
    kv_bytes_per_token: int | None = None  # from the GGUF metadata; None when it does not say
    context_length: int | None = None


@dataclass(frozen=True, slots=True)
class PoolFacts:
    """A pool's memory and catalog as `llorch fleet apply` last reported them (FLT-065)."""

    ram_total_bytes: int
    ram_free_bytes: int
    vram_total_bytes: int | None = None
    vram_free_bytes: int | None = None
    models: Mapping[str, ModelFacts] = field(default_factory=dict)
    reported_ms: int = 0

    def to_json(self) -> dict[str, Any]:
        """The report as the audit trail keeps it (ORCH-410)."""
        return asdict(self)


OVERHEAD_BYTES = 256 << 20
"""Compute buffers, the runtime and the worker process beside the weights and KV (FLT-067)."""
DEFAULT_CTX = 4096  # llorch-workerd's default context per slot


def need_bytes(spec: ModelSpec, facts: ModelFacts) -> tuple[int, str]:
    """Memory one replica needs (FLT-067): the model file, plus the KV cache of `slots`
    contexts of `ctx` tokens (the worker's 4096 when 0, at most the model's own) at the
    GGUF's per-token KV size (f16), plus OVERHEAD_BYTES; and how that was counted."""
    ctx = spec.ctx or DEFAULT_CTX
    if facts.context_length:
        ctx = min(ctx, facts.context_length)
    kv = (facts.kv_bytes_per_token or 0) * ctx * spec.slots
    how = f"model {_mib(facts.size_bytes)} + KV {_mib(kv)} + overhead {_mib(OVERHEAD_BYTES)}"
    if facts.kv_bytes_per_token is None:
        how += " (KV size unknown)"
    return facts.size_bytes + kv + OVERHEAD_BYTES, how


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.0f} MiB"


def _free_bytes(spec: ModelSpec, facts: PoolFacts) -> tuple[int | None, str]:
    """The memory a replica of `spec` draws from on the pool: VRAM for a GPU backend when the
    pool reported it, else RAM."""
    if spec.backend != "cpu" and facts.vram_free_bytes is not None:
        return facts.vram_free_bytes, "VRAM"
    return facts.ram_free_bytes, "RAM"


def worker_id_for(model: str, pool: str, n: int) -> str:
    """The id of the n-th fleet-managed replica of `model` on `pool` (valid for llorch-pool)."""
    return f"{model}.{pool}.{n}"[:128]


def _model_facts(spec: ModelSpec, pool: str, pools: Mapping[str, PoolFacts]) -> ModelFacts | None:
    """The model's size as `pool` reported it, else as another pool did (a model not yet
    downloaded there is the same file)."""
    own = pools.get(pool)
    if own is not None and spec.id in own.models:
        return own.models[spec.id]
    return next((f.models[spec.id] for f in pools.values() if spec.id in f.models), None)


def _fits(
    spec: ModelSpec, pool: str, pools: Mapping[str, PoolFacts], used: dict[str, int]
) -> str | None:
    """None when a replica fits on `pool` (or the pool has not said), else why not."""
    facts = pools.get(pool)
    model = _model_facts(spec, pool, pools)
    if facts is None or model is None:
        return None
    free, kind = _free_bytes(spec, facts)
    if free is None:
        return None
    need, how = need_bytes(spec, model)
    left = free - used.get(pool, 0)
    if need <= left:
        return None
    return f"{pool}: needs {_mib(need)} ({how}), {_mib(max(left, 0))} {kind} free"


def _spawn_ids(
    spec: ModelSpec,
    taken: set[str],
    count: int,
    per_pool: dict[str, int],
    pools: Mapping[str, PoolFacts] | None = None,
    refused: list[str] | None = None,
) -> list[tuple[str, str]]:
    """(pool, worker id) for `count` new replicas: each on the pool with fewest replicas of the
    model, the earlier in `pools` on a tie, with the lowest free index there; a pool the
    replica does not fit is passed over (why, in `refused`)."""
    out: list[tuple[str, str]] = []
    used: dict[str, int] = {}
    for _ in range(count):
        order = sorted(spec.pools, key=lambda p: (per_pool.get(p, 0), spec.pools.index(p)))
        pool = None
        for candidate in order:
            why = _fits(spec, candidate, pools or {}, used)
            if why is None:
                pool = candidate
                break
            if refused is not None and why not in refused:
                refused.append(why)
        if pool is None:
            break
        model = _model_facts(spec, pool, pools or {})
        if model is not None:
            used[pool] = used.get(pool, 0) + need_bytes(spec, model)[0]
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


class Placement(TypedDict):
    """Per model, what the diff saw of where replicas are (FLT-060, FLT-066)."""

    misplaced: list[str]  # live replicas on pools the model's `pools` do not list
    unplaced: list[str]  # why a replica the plan asked for could not be placed (no pool fits)


def diff(
    spec: FleetSpec,
    replicas: Mapping[str, int],
    reasons: Mapping[str, str],
    workers: Iterable[ActualWorker],
    starting: Iterable[Action] = (),
    *,
    replace_misplaced: bool = False,
    pools: Mapping[str, PoolFacts] | None = None,
    placement: dict[str, Placement] | None = None,
) -> list[Action]:
    """Actions that close the gap between `replicas` (the plan) and `workers` (actual).

    `starting` are spawn actions leased or done whose worker has not registered yet: they
    count as replicas, so a slow start is never spawned twice. Only replicas on the model's
    desired pools count (FLT-060); `placement`, when given, is filled with the misplaced ones
    and the replicas no pool had room for.
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
        live = [w for w in mine if w.state in LIVE_STATES and w.pool in m.pools]
        misplaced = [w for w in mine if w.state in LIVE_STATES and w.pool not in m.pools]
        pending = spawning.get(m.id, [])
        target = replicas.get(m.id, len(live) + len(pending))
        reason = reasons.get(m.id, "")
        have = len(live) + len(pending)
        per_pool: dict[str, int] = {}
        for w in live:
            per_pool[w.pool] = per_pool.get(w.pool, 0) + 1
        for a in pending:
            per_pool[a["pool"]] = per_pool.get(a["pool"], 0) + 1
        refused: list[str] = []
        unplaced: list[str] = []
        if have < target:
            why = f"scale {m.id} from {have} to {target} replicas: {reason}"
            chosen = _spawn_ids(m, all_ids, target - have, per_pool, pools, refused)
            if refused and len(chosen) == target - have:
                why += f" (passed over {'; '.join(refused)})"
            elif refused:
                short = target - have - len(chosen)
                room = "; ".join(refused)
                unplaced = [f"{short} replica(s) not placed, no pool has room: {room}"]
            for pool, wid in chosen:
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
        ready = sum(1 for w in live if w.state == "ready")
        if replace_misplaced and misplaced and ready >= target:
            # Make before break: a misplaced replica goes once the placed ones are serving.
            for w in misplaced:
                why = (
                    f"{w.id} is misplaced: pool {w.pool} is not in models.{m.id}.pools "
                    f"({', '.join(m.pools)}); {ready} placed replica(s) serve"
                )
                out.append(_action("drain", m, w.pool, w.id, why))
        for w in mine:
            if w.pool not in m.pools and not replace_misplaced:
                continue  # not the fleet's to stop: a hand-spawned worker, or drained by hand
            if w.state == "drained" or (w.state == "draining" and w.busy == 0):
                out.append(
                    _action("stop", m, w.pool, w.id, f"{w.id} is drained: no task is running on it")
                )
        if placement is not None:
            placement[m.id] = {"misplaced": [w.id for w in misplaced], "unplaced": unplaced}
    return out
