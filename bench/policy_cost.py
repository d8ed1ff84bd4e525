"""What one scheduling decision of the built-in Starlark policy costs, by fleet size.

    python bench/policy_cost.py [--workers 10,100,1000] [--compare-encodings]

Prints JSON: p50/p99 of PolicyEngine.schedule() in microseconds (encoding the inputs, the
Starlark call, checking the answer), without and with a session_id. bench/relay.py imports
`measure`. --compare-encodings also times handing the same inputs to Starlark as Python
dicts through the binding, the alternative the engine's one-JSON-string call replaced.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import starlark as sl

from orchestratord.policy import ClusterView, PolicyEngine, TaskView, WorkerView, builtin_source

_STATES = ("ready", "ready", "ready", "busy", "draining", "stale")


def fleet(n_workers: int, seed: int = 7) -> tuple[TaskView, list[WorkerView], ClusterView]:
    """A task and `n_workers` workers, three in four serving its model, in mixed states."""
    rng = random.Random(seed)
    workers: list[WorkerView] = []
    for i in range(n_workers):
        state = rng.choice(_STATES)
        total = rng.choice((1, 2, 4, 8))
        busy = total if state == "busy" else rng.randrange(total)
        workers.append(
            {
                "id": f"worker-{i:04d}",
                "pool": f"pool-{i % 8}",
                "model": "qwen2.5-0.5b-q4" if i % 4 else "llama-3.2-1b-q4",
                "backend": "cpu",
                "state": state,  # type: ignore[typeddict-item]
                "slots_total": total,
                "slots_busy": busy,
                "tokens_per_s": round(rng.uniform(10, 80), 1),
                "last_heartbeat_ms": 1_700_000_000_000 - rng.randrange(2000),
                "recent_starts": rng.randrange(60),
                "cached_tokens": 0,
                "recent_sessions": [f"s-{rng.randrange(500)}" for _ in range(8)],
                "recent_prefixes": [f"{rng.randrange(1 << 64):016x}" for _ in range(8)],
            }
        )
    task: TaskView = {
        "id": "task-0001",
        "model": "qwen2.5-0.5b-q4",
        "priority": "interactive",
        "session_id": None,
        "max_tokens": 128,
        "prompt_tokens": 300,
        "wait_ms": 12,
        "prefix_hash": "9f2c1e0b7a3d4c5e",
        "tenant": "acme",
        "constrained": False,
        "logprobs": False,
        "tools": 0,
        "n": 1,
        "tenant_limits": None,
        "tenant_usage": {},
        "failovers": 0,
    }
    cluster: ClusterView = {
        "queue_depth": {"interactive": 3, "batch": 10},
        "now_ms": 1_700_000_000_000,
        "workers": {s: sum(1 for w in workers if w["state"] == s) for s in set(_STATES)},
        "running_by_tenant": {"acme": 5},
    }
    return task, workers, cluster


def _percentiles(fn: Callable[[], object], calls: int) -> dict[str, float]:
    for _ in range(min(20, calls)):
        fn()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return {
        "p50_us": round(statistics.median(samples) * 1e6, 1),
        "p99_us": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))] * 1e6, 1),
        "calls": calls,
    }


def _calls_for(n_workers: int) -> int:
    return max(200, 40_000 // max(1, n_workers))


def measure(n_workers: int, *, session: bool = False) -> dict[str, Any]:
    """p50/p99 (µs) of one default-policy schedule() over `n_workers` workers."""
    engine = PolicyEngine.from_file(None)
    task, workers, cluster = fleet(n_workers)
    if session:
        task = {**task, "session_id": "chat-1234"}
    chosen = engine.schedule(task, workers, cluster)
    result = _percentiles(lambda: engine.schedule(task, workers, cluster), _calls_for(n_workers))
    return {"workers": n_workers, "session": session, "chosen": chosen, **result}


def measure_dict_binding(n_workers: int) -> dict[str, Any]:
    """The same decision with Python dicts converted by starlark-pyo3 (not what the engine does)."""
    module = sl.Module()
    sl.eval(module, sl.parse("default.star", builtin_source()), sl.Globals.standard())
    frozen = module.freeze()
    task, workers, cluster = fleet(n_workers)
    result = _percentiles(
        lambda: frozen.call("schedule", task, workers, cluster), _calls_for(n_workers)
    )
    return {"workers": n_workers, "encoding": "python-dicts", **result}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="10,100,1000", help="comma-separated fleet sizes")
    parser.add_argument("--compare-encodings", action="store_true")
    parser.add_argument("--model", help="ignored (make bench passes it to every script)")
    args = parser.parse_args()
    sizes = [int(s) for s in args.workers.split(",")]
    report: dict[str, Any] = {
        "bench": "policy_cost",
        "policy": "default.star",
        "schedule": [measure(n) for n in sizes],
        "schedule_with_session": [measure(n, session=True) for n in sizes],
    }
    if args.compare_encodings:
        report["python_dicts_binding"] = [measure_dict_binding(n) for n in sizes]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
