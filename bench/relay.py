"""Relay overhead: TTFT and tokens/s direct-to-worker vs through orchestratord, same run.

Starts one real llorch-workerd and one real orchestratord on loopback, then at each
concurrency runs the same streams twice (direct POST /execute, then POST /v2/tasks with
Accept: text/event-stream), alternating the order per round, and prints one JSON object:
TTFT p50/p95 per path, aggregate tokens/s, the added TTFT p50 and the relayed/direct throughput
ratio, plus the policy decision cost (bench.policy_cost.measure) at 10/100/1000 workers.

    python bench/relay.py --model .cache/models/llorch-tiny.gguf [--concurrency 1,16,64]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestratord.worker_client.relay import iter_sse
from tests.support import free_port, wait_http_ready

TOKEN = "bench-cluster-token"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@contextlib.contextmanager
def process(args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


async def one_stream(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[float, float, int]:
    """(ttft seconds, total seconds, tokens_out) of one stream, timed by the client."""
    start = time.perf_counter()
    ttft: float | None = None
    tokens = 0
    async with client.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            raise RuntimeError(f"{url}: {r.status_code} {(await r.aread())[:200]!r}")
        async for event, data in iter_sse(r.aiter_raw()):
            if event == "token" and ttft is None:
                ttft = time.perf_counter() - start
            elif event == "end":
                tokens = int(json.loads(data)["tokens_out"])
            elif event == "error":
                raise RuntimeError(f"{url}: error event {data!r}")
    return (ttft if ttft is not None else float("nan")), time.perf_counter() - start, tokens


async def run_batch(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str], n: int
) -> tuple[list[float], float]:
    """n concurrent streams: (TTFT of each in ms, aggregate tokens/s)."""
    start = time.perf_counter()
    results = await asyncio.gather(*(one_stream(client, url, body, headers) for _ in range(n)))
    wall = time.perf_counter() - start
    return [r[0] * 1000 for r in results], sum(r[2] for r in results) / wall


def _summary(ttfts: list[float], rates: list[float]) -> dict[str, float]:
    ttfts = sorted(ttfts)
    return {
        "ttft_p50_ms": round(statistics.median(ttfts), 3),
        "ttft_p95_ms": round(ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))], 3),
        "tokens_per_s": round(statistics.median(rates), 1),
        "streams": len(ttfts),
    }


async def measure(
    worker_url: str, orch_url: str, model: str, n: int, max_tokens: int, rounds: int
) -> dict[str, Any]:
    """Alternate direct and relayed batches; TTFT pooled over all streams, tokens/s the median
    over batches. Small batches get more rounds so every figure rests on >= 24 streams."""
    direct_body = {
        "prompt": "benchmark the relay",
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0.8,
        "seed": 1,
    }
    relayed_body = {"model": model, **direct_body}
    paths = {
        "direct": (worker_url + "/execute", direct_body, AUTH),
        "relayed": (orch_url + "/v2/tasks", relayed_body, {**AUTH, "accept": "text/event-stream"}),
    }
    ttfts: dict[str, list[float]] = {"direct": [], "relayed": []}
    rates: dict[str, list[float]] = {"direct": [], "relayed": []}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=256)
    async with httpx.AsyncClient(timeout=120, limits=limits, trust_env=False) as client:
        for path in paths:  # warm up both paths (connections, caches)
            await run_batch(client, *paths[path], min(n, 4))
        for r in range(max(rounds, -(-24 // n))):
            for path in ("direct", "relayed") if r % 2 == 0 else ("relayed", "direct"):
                t, rate = await run_batch(client, *paths[path], n)
                ttfts[path] += t
                rates[path].append(rate)
    d, o = _summary(ttfts["direct"], rates["direct"]), _summary(ttfts["relayed"], rates["relayed"])
    return {
        "concurrency": n,
        "direct": d,
        "relayed": o,
        "added_ttft_p50_ms": round(o["ttft_p50_ms"] - d["ttft_p50_ms"], 3),
        "tokens_per_s_ratio": round(o["tokens_per_s"] / d["tokens_per_s"], 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--concurrency", default="1,16,64")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--slots", type=int, default=4)
    p.add_argument("--policy-workers", default="10,100,1000")
    args = p.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="llorch-bench-relay-"))
    wport, oport = free_port(), free_port()
    worker_url, orch_url = f"http://127.0.0.1:{wport}", f"http://127.0.0.1:{oport}"
    with (
        process(
            [
                "orchestratord",
                "--port",
                str(oport),
                "--state-dir",
                str(tmp / "state"),
                "--cluster-token",
                TOKEN,
                "--api-key",
                TOKEN,
                "--log-level",
                "warning",
                "--heartbeat-stale-ms",
                "3600000",
                "--heartbeat-dead-ms",
                "7200000",
            ],
            tmp / "orchestratord.log",
        ) as orch,
        process(
            [
                "worker",
                "--model",
                str(args.model),
                "--port",
                str(wport),
                "--slots",
                str(args.slots),
                "--max-queue",
                str(max(levels) * 2),
                "--cluster-token",
                TOKEN,
                "--orchestrator-url",
                orch_url,
                "--worker-id",
                "bench-w1",
            ],
            tmp / "worker.log",
        ) as worker,
    ):
        wait_http_ready(orch_url + "/health", orch)
        wait_http_ready(worker_url + "/health", worker, ready="ready", timeout=60)
        model = httpx.get(worker_url + "/health").json()["model"]
        _ensure_registered(orch_url, worker_url, model, args.slots)
        results = [
            asyncio.run(measure(worker_url, orch_url, model, n, args.max_tokens, args.rounds))
            for n in levels
        ]
    report: dict[str, Any] = {
        "bench": "relay",
        "model": model,
        "worker_slots": args.slots,
        "max_tokens": args.max_tokens,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "results": results,
        "targets": {"added_ttft_p50_ms_max": 5.0, "tokens_per_s_ratio_at_16_min": 0.9},
    }
    try:
        from bench.policy_cost import measure as policy_measure

        report["policy_decision"] = [policy_measure(int(n)) for n in args.policy_workers.split(",")]
    except ImportError as e:  # the policy bench ships separately
        report["policy_decision"] = f"unavailable: {e}"
    print(json.dumps(report, indent=2))


def _ensure_registered(orch_url: str, worker_url: str, model: str, slots: int) -> None:
    """Wait for the worker to register itself; a worker build without registration is
    registered here, with its heartbeats sent from this process, so the bench still runs."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        listed = httpx.get(orch_url + "/v2/workers", headers=AUTH).json()["workers"]
        if any(w["id"] == "bench-w1" and w["state"] == "ready" for w in listed):
            return
        time.sleep(0.1)
    httpx.post(
        orch_url + "/v2/workers/register",
        headers=AUTH,
        json={
            "worker_id": "bench-w1",
            "url": worker_url,
            "model": model,
            "slots_total": slots,
        },
    ).raise_for_status()
    print("note: the worker did not register itself; registered by the bench", file=sys.stderr)


if __name__ == "__main__":
    main()
