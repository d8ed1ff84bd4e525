"""A slow policy must not stall running streams: inter-token gaps of a long stream while a
burst of submissions makes orchestratord ask a slow policy, against the built-in policy.

Starts one real llorch-workerd (`--slots`, default 4) and orchestratord on loopback, twice:
with the built-in policy, and with a policy whose admit() and schedule() each spin about
`--policy-ms` (default 40) in a Starlark loop over a range (calibrated here, with the same
starlark-pyo3, to this machine's speed). In each run one long stream (`--stream-tokens`,
ignore_eos, one token per write: `--stream-coalesce-ms 0`) starts; after its first token
`--burst` other tasks (one token each) are submitted at once, so the policy is asked once per
submission (admit) and once per placement (schedule). The gaps between the stream's token
deliveries (the events that arrive in one read count once: the tiny model makes a token every
fraction of a millisecond) while the burst is in flight are the figure: a policy that runs on
the event loop holds every token relay for the length of each call (specs/policy.md POL-090).
Target: p99 < 50 ms.
Also printed: the gaps over the whole stream, how long the burst took, the policy fallbacks and
breaker trips orchestratord counted (`/metrics`; the trips are absent in builds without one).

Black-box: only HTTP and the programs' command lines, so it measures any orchestratord build.
Everything shares this machine's cores; on a busy machine run it more than once.

    python bench/slow_policy.py --model .cache/models/llorch-tiny.gguf [--policy-ms 40]
        [--burst 24] [--stream-tokens 3000] [--slots 4]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import starlark as sl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._fleet import Fleet, fleet, lean_sse_frames, percentile

TENANT, KEY = "bench", "bench-key"
HEADERS = {"authorization": f"Bearer {KEY}"}
SLOW = """
def _spin():
    n = 0
    for i in range(%(n)d):
        n += i
    return n

def admit(task, cluster):
    _spin()
    return {"accept": True}

def schedule(task, workers, cluster):
    _spin()
    for w in workers:
        if w["state"] == "ready" and w["slots_busy"] < w["slots_total"]:
            return w["id"]
    return None
"""


def calibrate(ms: float) -> int:
    """Loop iterations one Starlark call spends `ms` on, on this machine (median of 5)."""
    n = 200_000

    def timed(iterations: int) -> float:
        module = sl.Module()
        src = f"def f():\n    n = 0\n    for i in range({iterations}):\n        n += i\n"
        sl.eval(module, sl.parse("c.star", src), sl.Globals.standard())
        frozen = module.freeze()
        runs = []
        for _ in range(5):
            start = time.perf_counter()
            frozen.call("f")
            runs.append(time.perf_counter() - start)
        return sorted(runs)[2]

    return max(1, round(n * (ms / 1000) / timed(n)))


async def stream_times(url: str, body: dict[str, Any], headers: dict[str, str]) -> list[float]:
    """The arrival time (perf_counter) of each token event of one SSE task stream."""
    return [
        now async for now, frame in lean_sse_frames(url, body, headers) if b"event: token" in frame
    ]


def gaps_ms(times: list[float]) -> list[float]:
    """Gaps between deliveries: the token events that arrive in one read count once (with the
    tiny model a worker makes a token every fraction of a millisecond, so after a stall the
    tokens it made meanwhile arrive together, and per-event gaps would be mostly zeros)."""
    arrivals = sorted(set(times))
    return [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]


def summary(gaps: list[float]) -> dict[str, float | int]:
    if not gaps:
        return {"n": 0}
    return {
        "n": len(gaps),
        "p50_ms": percentile(gaps, 50),
        "p99_ms": percentile(gaps, 99),
        "max_ms": round(max(gaps), 3),
        "over_30ms": sum(g > 30 for g in gaps),
        "span_s": round(sum(gaps) / 1000, 3),
    }


def scrape(text: str, prefix: str) -> float | None:
    """The sum of the samples of one metric family in Prometheus text, None if absent."""
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(prefix) and not line.startswith("#")
    ]
    return sum(values) if values else None


async def one_run(f: Fleet, args: argparse.Namespace) -> dict[str, Any]:
    assert f.orch is not None
    url = f.orch.url
    async with httpx.AsyncClient(timeout=120, trust_env=False) as client:
        await f.wait_registered(client, ["w1"])
        stream_body = {
            "model": "m",
            "prompt": "Once upon a time",
            "max_tokens": args.stream_tokens,
            "ignore_eos": True,
        }
        stream = asyncio.create_task(stream_times(url + "/v2/tasks", stream_body, HEADERS))
        while True:  # the burst starts once the stream runs
            await asyncio.sleep(0.01)
            if stream.done():
                stream.result()
                raise RuntimeError("the stream ended before the burst started")
            listed = (await client.get(url + "/v2/tasks", headers=HEADERS)).json()
            if any(t["status"] == "running" for t in listed["tasks"]):
                break
        await asyncio.sleep(0.2)

        async def short(i: int) -> None:
            body = {"model": "m", "prompt": f"burst {i}", "max_tokens": 1}
            r = await client.post(url + "/v2/tasks", json=body, headers=HEADERS)
            r.raise_for_status()
            task_id = r.json()["task_id"]
            while True:
                got = (await client.get(f"{url}/v2/tasks/{task_id}", headers=HEADERS)).json()
                if got["status"] in ("succeeded", "failed", "cancelled"):
                    return
                await asyncio.sleep(0.02)

        burst_start = time.perf_counter()
        await asyncio.gather(*(short(i) for i in range(args.burst)))
        burst_end = time.perf_counter()
        burst_done_before_stream = not stream.done()
        times = await stream
        metrics = (await client.get(url + "/metrics")).text
    during = [t for t in times if burst_start <= t <= burst_end]
    return {
        "gaps_during_burst": summary(gaps_ms(during)),
        "gaps_whole_stream": summary(gaps_ms(times)),
        "stream_tokens": len(times),
        "burst_s": round(burst_end - burst_start, 3),
        "stream_outlived_burst": burst_done_before_stream,
        "policy_fallbacks": scrape(metrics, "llorch_orchestrator_policy_fallbacks_total"),
        "breaker_trips": scrape(metrics, "llorch_orchestrator_policy_breaker_trips_total"),
    }


async def measure(args: argparse.Namespace, policy: Path | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, fleet(Path(tmp), args.model, {TENANT: KEY}) as f:
        extra = ["--stream-coalesce-ms", "0", "--policy-budget-ms", str(args.budget_ms)]
        if policy is not None:
            extra += ["--policy", str(policy)]
        f.start_orchestratord(*extra)
        f.add_worker("w1", args.slots, "--model-name", "m", "--n-ctx", str(args.n_ctx))
        return await one_run(f, args)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True, help="GGUF model for the worker")
    p.add_argument("--policy-ms", type=float, default=40.0, help="time per admit/schedule")
    p.add_argument(
        "--budget-ms",
        type=float,
        default=200.0,
        help="orchestratord's --policy-budget-ms: above --policy-ms, so the policy's calls "
        "are answered by it, not cut off and answered by the built-in",
    )
    p.add_argument("--burst", type=int, default=24, help="tasks submitted at once")
    p.add_argument("--stream-tokens", type=int, default=3000, help="tokens of the long stream")
    p.add_argument("--slots", type=int, default=4, help="the worker's slots")
    p.add_argument("--n-ctx", type=int, default=4096, help="the worker's context per slot")
    args = p.parse_args()
    iterations = calibrate(args.policy_ms)
    report: dict[str, Any] = {
        "policy_ms": args.policy_ms,
        "spin_iterations": iterations,
        "burst": args.burst,
        "policy_budget_ms": args.budget_ms,
        "target": "gaps_during_burst.p99_ms < 50 with the slow policy",
    }
    with tempfile.TemporaryDirectory() as tmp:
        slow = Path(tmp) / "slow.star"
        slow.write_text(SLOW % {"n": iterations})
        report["builtin"] = asyncio.run(measure(args, None))
        report["slow_policy"] = asyncio.run(measure(args, slow))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
