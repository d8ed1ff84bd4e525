"""Fairness: one tenant's backlog against another tenant's trickle, FIFO and fair share.

Starts a real orchestratord (tenants A and B with their own keys) and `--workers` real
llorch-workerd processes of one model on loopback, three times:

1. `fifo` (`--queue-discipline fifo`, today's order): tenant A submits `--a-tasks` batch tasks
   at once (the workers SIGSTOPped meanwhile, so they are queued at once), then tenant B
   submits `--b-tasks`, one every `--b-interval` seconds, to the same model and lane. B's
   queue time (started - created) and service time (finished - started) come from
   orchestratord's own task records: p50/p99 of each, and B's queue-time p99 over its median
   service time (target with fair share: at most 2).
2. `wfq` (the default discipline): the same.
3. `weighted`: `--tenant-weight A=3`; A and B both submit `--weighted-tasks` at once (the
   workers stopped meanwhile). While
   both are backlogged (from the later of their first starts to the earlier of their last
   starts), the tokens served to each: A's share over B's (target 3, within 10%).

A run ends when B's tasks have finished (A's backlog is left to the daemon's shutdown), so the
fifo run, where B waits behind all of A's, is the long one. Prints one JSON object. Black-box:
only HTTP. The machine it runs on is stated by whoever reports the figures; on a shared one the
absolute times are noisy, the ratios less so.

A run's exit status is 1 when a target is missed. The defaults are about a fifth of the issue's
sizes so `make bench` stays short; `--full` runs them (2,000 tasks of A, 20 of B a second
apart, 400 each in the weighted run).

    python bench/fairness.py [--model .cache/models/llorch-tiny.gguf] [--full] [--a-tasks N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._fleet import TERMINAL, Fleet, fleet, percentile, raise_fd_limit

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"A": "fair-key-a", "B": "fair-key-b"}
# `make bench` runs the short sizes; --full the issue's.
SHORT = {"a_tasks": 400, "b_tasks": 10, "b_interval": 0.5, "weighted_tasks": 200}
FULL = {"a_tasks": 2000, "b_tasks": 20, "b_interval": 1.0, "weighted_tasks": 400}


class Run:
    def __init__(self, f: Fleet, client: httpx.AsyncClient, model: str, max_tokens: int) -> None:
        self.f = f
        self.client = client
        self.model = model
        self.max_tokens = max_tokens
        self.n = 0

    @property
    def url(self) -> str:
        assert self.f.orch is not None
        return self.f.orch.url

    async def submit(self, tenant: str) -> str:
        self.n += 1
        body = {
            "model": self.model,
            "prompt": f"fair {tenant} {self.n}",
            "max_tokens": self.max_tokens,
            "ignore_eos": True,
            "priority": "batch",
        }
        for attempt in range(3):
            try:
                r = await self.client.post(
                    self.url + "/v2/tasks", json=body, headers=self.f.client_headers(tenant)
                )
                break
            except httpx.TransportError:
                if attempt == 2:
                    raise
        if r.status_code != 202:
            raise RuntimeError(f"submit: {r.status_code} {r.text[:300]}")
        return str(r.json()["task_id"])

    async def burst(self, tenant: str, n: int) -> list[str]:
        """`n` submits of one tenant, 32 in flight: "at once" as a client can."""
        sem = asyncio.Semaphore(32)

        async def one() -> str:
            async with sem:
                return await self.submit(tenant)

        return list(await asyncio.gather(*(one() for _ in range(n))))

    async def record(self, tenant: str, task_id: str) -> dict[str, Any]:
        r = await self.client.get(
            f"{self.url}/v2/tasks/{task_id}", headers=self.f.client_headers(tenant)
        )
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        return body

    async def records(self, tenant: str, ids: list[str]) -> list[dict[str, Any]]:
        sem = asyncio.Semaphore(32)

        async def one(task_id: str) -> dict[str, Any]:
            async with sem:
                return await self.record(tenant, task_id)

        return list(await asyncio.gather(*(one(i) for i in ids)))

    async def finished(self, tenant: str, ids: list[str], within_s: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + within_s
        while True:
            recs = await self.records(tenant, ids)
            if all(r["status"] in TERMINAL for r in recs):
                return recs
            if time.monotonic() > deadline:
                left = sum(r["status"] not in TERMINAL for r in recs)
                raise RuntimeError(f"{left} of {tenant}'s tasks unfinished after {within_s} s")
            await asyncio.sleep(0.5)


def start(f: Fleet, args: argparse.Namespace, *extra: str) -> None:
    capacity = args.a_tasks + args.b_tasks + 2 * args.weighted_tasks + 100
    # The workers are stopped while a burst is submitted (see `paused`): late heartbeats must
    # not get them marked dead, nor a job sent just before the stop time out.
    f.start_orchestratord(
        "--queue-capacity",
        str(capacity),
        "--heartbeat-dead-ms",
        "600000",
        "--read-timeout-s",
        "600",
        *extra,
    )
    for i in range(args.workers):
        f.add_worker(f"w{i}", args.slots)


@contextlib.contextmanager
def paused(f: Fleet) -> Iterator[None]:
    """The workers SIGSTOPped for a burst of submits, so the burst is queued at once (as a
    client faster than this machine would queue it) rather than partly served while it is
    being sent; at most one job per slot reaches a worker before its heartbeats stop."""
    for w in f.workers:
        w.signal(signal.SIGSTOP)
    try:
        yield
    finally:
        for w in f.workers:
            w.signal(signal.SIGCONT)


def times(recs: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [r for r in recs if r["status"] == "succeeded"]
    queue = [r["started_ms"] - r["created_ms"] for r in ok]
    service = [r["finished_ms"] - r["started_ms"] for r in ok]
    if not ok:
        return {"succeeded": 0, "failed": len(recs)}
    out = {
        "succeeded": len(ok),
        "failed": len(recs) - len(ok),
        "queue_ms": {"p50": percentile(queue, 50), "p99": percentile(queue, 99)},
        "service_ms": {"p50": percentile(service, 50), "p99": percentile(service, 99)},
    }
    out["queue_p99_over_service_p50"] = round(
        percentile(queue, 99) / max(1.0, percentile(service, 50)), 2
    )
    return out


async def backlog_vs_trickle(
    args: argparse.Namespace, tmp: Path, discipline: str
) -> dict[str, Any]:
    model = args.model.stem
    with fleet(tmp / discipline, args.model, KEYS) as f:
        (tmp / discipline).mkdir(exist_ok=True)
        start(f, args, "--queue-discipline", discipline)
        async with httpx.AsyncClient(timeout=60) as client:
            await f.wait_registered(client, [f"w{i}" for i in range(args.workers)])
            run = Run(f, client, model, args.max_tokens)
            t0 = time.perf_counter()
            with paused(f):
                a_ids = await run.burst("A", args.a_tasks)
            a_submit_s = round(time.perf_counter() - t0, 1)
            b_ids: list[str] = []
            for i in range(args.b_tasks):
                if i:
                    await asyncio.sleep(args.b_interval)
                b_ids.append(await run.submit("B"))
            b = await run.finished("B", b_ids, args.timeout)
            a = await run.records("A", a_ids)
    a_done = sum(r["status"] == "succeeded" for r in a)
    return {
        "discipline": discipline,
        "a_submit_s": a_submit_s,
        "a_succeeded_when_b_done": a_done,
        "b": times(b),
    }


async def weighted(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    model = args.model.stem
    with fleet(tmp / "weighted", args.model, KEYS) as f:
        (tmp / "weighted").mkdir(exist_ok=True)
        start(f, args, "--tenant-weight", "A=3")
        async with httpx.AsyncClient(timeout=60) as client:
            await f.wait_registered(client, [f"w{i}" for i in range(args.workers)])
            run = Run(f, client, model, args.max_tokens)
            n = args.weighted_tasks
            with paused(f):
                ids_a, ids_b = await asyncio.gather(run.burst("A", n), run.burst("B", n))
            a = await run.finished("A", ids_a, args.timeout)
            b = await run.finished("B", ids_b, args.timeout)
    starts = {
        t: [r["started_ms"] for r in rs if r.get("started_ms")] for t, rs in (("A", a), ("B", b))
    }
    lo = max(min(starts["A"]), min(starts["B"]))
    hi = min(max(starts["A"]), max(starts["B"]))
    tokens = {
        t: sum(
            r["tokens_out"] or 0 for r in rs if r.get("started_ms") and lo <= r["started_ms"] <= hi
        )
        for t, rs in (("A", a), ("B", b))
    }
    ratio = tokens["A"] / max(1, tokens["B"])
    return {
        "weights": {"A": 3, "B": 1},
        "window_ms": hi - lo,
        "tokens_in_window": tokens,
        "a_over_b": round(ratio, 3),
        "within_10pct_of_3": abs(ratio - 3) <= 0.3,
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    raise_fd_limit(4096)
    out: dict[str, Any] = {
        "model": args.model.name,
        "workers": args.workers,
        "slots": args.slots,
        "max_tokens": args.max_tokens,
        "a_tasks": args.a_tasks,
        "b_tasks": args.b_tasks,
        "b_interval_s": args.b_interval,
    }
    with tempfile.TemporaryDirectory(prefix="llorch-fair-") as d:
        tmp = Path(d)
        for run in args.runs.split(","):
            if run in ("fifo", "wfq"):
                out[run] = await backlog_vs_trickle(args, tmp, run)
            elif run == "weighted":
                out["weighted"] = await weighted(args, tmp)
            else:
                raise SystemExit(f"--runs: unknown run {run!r} (fifo, wfq, weighted)")
            print(f"{run}: {json.dumps(out[run])}", file=sys.stderr, flush=True)
    checks: list[bool] = []
    wfq = out.get("wfq", {}).get("b", {})
    if "wfq" in out:
        ok = wfq.get("queue_p99_over_service_p50", math.inf) <= 2
        out["target_b_queue_p99_le_2x_service"] = ok
        checks.append(ok)
    if "weighted" in out:
        checks.append(out["weighted"]["within_10pct_of_3"])
    out["pass"] = all(checks)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / ".cache/models/llorch-tiny.gguf")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--slots", type=int, default=2, help="slots per worker")
    p.add_argument("--max-tokens", type=int, default=256, help="of every task (ignore_eos)")
    p.add_argument("--a-tasks", type=int, help="A's burst [400; --full 2000]")
    p.add_argument("--b-tasks", type=int, help="B's tasks [10; --full 20]")
    p.add_argument("--b-interval", type=float, help="seconds between B's submits [0.5; --full 1]")
    p.add_argument("--weighted-tasks", type=int, help="per tenant, weighted run [200; --full 400]")
    p.add_argument("--full", action="store_true", help="the issue's sizes")
    p.add_argument("--runs", default="fifo,wfq,weighted")
    p.add_argument("--timeout", type=float, default=1800, help="seconds a run may take")
    args = p.parse_args()
    sizes = FULL if args.full else SHORT
    for name, value in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    report = asyncio.run(main_async(args))
    print(json.dumps(report, indent=2))
    sys.exit(0 if report["pass"] else 1)


if __name__ == "__main__":
    main()
