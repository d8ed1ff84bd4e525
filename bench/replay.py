"""How long `orchestratord replay` takes for a large recorded trace.

    python bench/replay.py [--tasks 100000] [--workers 8] [--seed 7]

Records a synthetic trace through orchestratord's own database code (Store), then replays it
under the built-in policy and prints JSON: seconds to load the trace and to replay it, tasks
replayed per second, the CPU time the process used (on a busy machine the wall time is longer
by the machine's load, which is printed too), and the replay's own figures (p50/p99 queue
wait). The issue's bar is 100,000 tasks in under 30 s. `record_trace` also writes the trace of
tests/orchestratord/test_replay.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

from orchestratord.domain.registry import Worker
from orchestratord.domain.tasks import Priority, TaskRecord
from orchestratord.replay.cli import run
from orchestratord.replay.trace import load_trace
from orchestratord.store.db import Store, worker_row

TENANTS = ("acme", "globex", "initech")


def record_trace(
    path: Path,
    *,
    tasks: int,
    workers: int,
    slots: int = 2,
    load: float = 0.6,
    seed: int = 7,
) -> None:
    """Write `tasks` finished tasks on `workers` workers of model "m" into a database file,
    arriving as a Poisson process at `load` times the fleet's capacity."""
    rng = random.Random(seed)
    # Prompt sizes from a stream of their own: the trace's other draws stay what they were.
    prompts = random.Random(seed + 1)
    store = Store(f"sqlite:///{path}").open()
    try:
        fleet = [
            Worker(
                f"w{i}",
                url=f"http://10.0.0.{i}:8001",
                model="m",
                pool=f"pool-{i % 2}",
                slots_total=slots,
            )
            for i in range(workers)
        ]
        store.save_workers(worker_row(w, "ready") for w in fleet)
        mean_service_ms = 800.0
        rate_per_ms = load * workers * slots / mean_service_ms
        now = 1_700_000_000_000
        batch: list[TaskRecord] = []
        for n in range(tasks):
            now += max(0, round(rng.expovariate(rate_per_ms)))
            out = rng.randint(16, 256)
            service = round(out * 6.25 * rng.uniform(0.8, 1.2))  # ~160 tokens/s per stream
            start = now + rng.randint(0, 20)
            priority: Priority = "batch" if rng.random() < 0.3 else "interactive"
            batch.append(
                TaskRecord(
                    id=f"t{n:07d}",
                    model="m",
                    priority=priority,
                    status="succeeded",
                    prompt_hash="0" * 64,
                    created_ms=now,
                    max_tokens=256,
                    tenant=rng.choices(TENANTS, weights=(5, 3, 2))[0],
                    worker_id=f"w{rng.randrange(workers)}",
                    started_ms=start,
                    finished_ms=start + service,
                    tokens_out=out,
                    prompt_tokens=prompts.randint(8, 1024),
                )
            )
            if len(batch) == 10_000:
                store.save_tasks(batch)
                batch = []
        store.save_tasks(batch)
    finally:
        store.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", type=int, default=100_000)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--model", help="ignored (make bench passes it to every script)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "trace.db"
        record_trace(db, tasks=args.tasks, workers=args.workers, seed=args.seed)
        c0, t0 = time.process_time(), time.perf_counter()
        trace = load_trace(str(db))
        t1 = time.perf_counter()
        (result,) = run(trace, [("built-in", None)])
        c2, t2 = time.process_time(), time.perf_counter()
    json.dump(
        {
            "bench": "replay",
            "tasks": len(trace.tasks),
            "workers": len(trace.workers),
            "load_s": round(t1 - t0, 3),
            "replay_s": round(t2 - t1, 3),
            "total_s": round(t2 - t0, 3),
            "tasks_per_s": round(len(trace.tasks) / (t2 - t1)),
            "cpu_s": round(c2 - c0, 3),
            "under_30_s": (t2 - t0) < 30,
            "load_average_1m": round(os.getloadavg()[0], 2),
            "cpus": os.cpu_count(),
            "queue_wait_ms": result["queue_wait_ms"],
            "served": result["served"],
        },
        sys.stdout,
    )
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
