"""A burst of new conversations sharing a system prompt no worker has seen (WRK-176).

Each round sends `--sessions` chats at once (within `--window-s`), each opening with the
round's new system prompt (`--system-tokens`, a fresh text every round: nothing of it is
cached anywhere) and a short question of its own, to a fresh fleet's `--workers` workers of
`--slots` slots. Prints one JSON object (also to `--out`): per round and in all, TTFT
p50/p90/max, the prompt tokens the workers prefilled (prompt - cached), how many tasks
prefilled the system prompt (`cold_tasks`: more than half of it), and tasks per worker.

    python bench/prefix_burst.py [--sessions 12] [--system-tokens 600] [--rounds 4]

Black-box: only HTTP, so a clone of an older main measures the same way (before/after).
Measured on this 2-core machine, quiet, SmolLM2 on 3 workers of 2 slots (1 thread each),
12 chats a round, all turns (before: main before WRK-176; after: with it):

    --system-tokens 2000 --rounds 3  before: TTFT p50 26.5 s, p90 28.2 s, 28,850 tokens
                                     prefilled, 18 cold tasks (each slot prefilled it)
                                     after:  p50 16.8 s, p90 17.8 s, 17,210 tokens, 9 cold
                                     (one per worker)
    --system-tokens 600 --rounds 4   before: p50 4.67 s, p90 5.09 s, 8,325 tokens, 12 cold
                                     after:  p50 4.47 s, p90 5.00 s, 7,880 tokens, 12 cold

With 600 tokens the first chunk (512) is most of the prompt, and WRK-101 already copied it.
Also tried: counting a running task's prompt blocks as held by its worker in orchestratord's
cache index (as Dynamo's router counts its requests' active blocks), so the burst follows the
first task: no better with 2000 tokens (p50 16.3 s, 17,211 tokens) and a worse p90 with 600
(5.66 s): the burst piled onto one worker (8 of 12 tasks) while the others idled, where
spreading it lets the three prefill the prompt in parallel. Not kept.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench._fleet import Fleet, fleet, percentile  # noqa: E402
from bench.fleet_cache import (  # noqa: E402
    KEY,
    TENANT,
    filler,
    fleet_args,
    one_turn,
    start_fleet,
)


async def burst(f: Fleet, args: argparse.Namespace, k: int) -> list[dict[str, Any]]:
    """One round: the chats sent within `--window-s`, each read to its end."""
    rng = random.Random(f"{args.seed}-round-{k}")
    system = f"You are assistant {k} of the archive. " + filler(rng, args.system_tokens)
    headers = {"authorization": f"Bearer {KEY}"}
    offsets = sorted(rng.uniform(0, args.window_s) for _ in range(args.sessions))
    questions = [f"Question {i}: " + filler(rng, 20) for i in range(args.sessions)]
    start = time.perf_counter()

    async def chat(i: int, at: float) -> dict[str, Any]:
        await asyncio.sleep(max(0.0, start + at - time.perf_counter()))
        body = {
            "model": args.model_name,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": questions[i]},
            ],
            "max_tokens": args.max_tokens,
            "temperature": 0,
        }
        ttft, _, end, worker = await one_turn(f, body, headers)
        prompt = int(end.get("prompt_tokens", 0))
        cached = int(end.get("prompt_tokens_cached", 0))
        return {"ttft_s": ttft, "worker": worker, "prompt": prompt, "cached": cached}

    return list(await asyncio.gather(*(chat(i, at) for i, at in enumerate(offsets))))


def summary(turns: list[dict[str, Any]], system_tokens: int) -> dict[str, Any]:
    ttfts = [t["ttft_s"] for t in turns if t["ttft_s"] == t["ttft_s"]]
    return {
        "tasks": len(turns),
        "ttft_p50_s": percentile(ttfts, 50) if ttfts else None,
        "ttft_p90_s": percentile(ttfts, 90) if ttfts else None,
        "ttft_max_s": round(max(ttfts), 3) if ttfts else None,
        "prefilled_tokens": sum(t["prompt"] - t["cached"] for t in turns),
        "prompt_tokens": sum(t["prompt"] for t in turns),
        # A task that decoded at least half the system prompt prefilled it (again).
        "cold_tasks": sum(t["prompt"] - t["cached"] > system_tokens // 2 for t in turns),
        "tasks_per_worker": dict(sorted(Counter(t["worker"] for t in turns).items())),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"settings": {k: str(v) for k, v in vars(args).items() if k != "out"}}
    rounds: list[list[dict[str, Any]]] = []
    with (
        tempfile.TemporaryDirectory(prefix="prefix-burst-") as tmp,
        fleet(Path(tmp), args.model, {TENANT: KEY}) as f,
    ):
        start_fleet(f, args, None)
        async with httpx.AsyncClient(timeout=30) as client:
            await f.wait_registered(client, [f"w{i}" for i in range(args.workers)])
            for k in range(args.rounds):
                rounds.append(await burst(f, args, k))
                await f.wait_idle(client)
                print(f"round {k}: {summary(rounds[-1], args.system_tokens)}", file=sys.stderr)
    out["rounds"] = [summary(turns, args.system_tokens) for turns in rounds]
    out["all"] = summary([t for turns in rounds for t in turns], args.system_tokens)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    fleet_args(p)
    p.add_argument("--sessions", type=int, default=12, help="new chats per round")
    p.add_argument("--system-tokens", type=int, default=600)
    p.add_argument("--window-s", type=float, default=1.0, help="the round's chats arrive within")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
