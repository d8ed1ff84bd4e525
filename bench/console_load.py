"""The relay with and without the web console open: bench/relay.py's measurement, same run.

Starts two real workers and one real orchestratord as bench/relay.py does, then alternates
rounds without and with a headless Chromium tab signed in to the console (its Fleet page
follows GET /v2/events: every task's events and the 1-second snapshot), and prints one JSON
object: the relay figures of each condition per round, their medians, the with/without ratios,
and the spread between rounds without the console (the noise to compare the ratios with).

    python bench/console_load.py --model .cache/models/llorch-tiny.gguf [--concurrency 16]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._fleet import ADMIN_TOKEN, Fleet, fleet
from bench.relay import KEY, TENANT, measure

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def hold_tab(orch_url: str, profile: Path, chromium: str) -> int:
    """In a child process (Playwright's sync API runs its own event loop): open the console's
    Fleet page signed in, say "live", keep the tab open until stdin closes or sends a line,
    then exit 0 if the tab is still live (it never lost its feed)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(profile), executable_path=chromium, headless=True, args=FLAGS
        )
        try:
            page = ctx.new_page()
            page.goto(orch_url + "/ui/")
            page.get_by_test_id("token").fill(ADMIN_TOKEN)
            page.get_by_test_id("signin").click()
            page.locator("#live.on").wait_for(timeout=60_000)
            print("live", flush=True)
            sys.stdin.readline()
            return 0 if page.locator("#live.on").count() == 1 else 1
        finally:
            ctx.close()


@contextlib.contextmanager
def console_tab(orch_url: str, profile: Path, chromium: str) -> Iterator[None]:
    """A browser tab on the console's Fleet page, signed in and live, for the block's length."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--hold-tab", orch_url, "--profile", str(profile)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "LLORCH_CHROMIUM": chromium},
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        if child.stdout.readline().strip() != "live":
            raise RuntimeError("the console tab did not go live")
        yield
        child.stdin.write("done\n")
        child.stdin.flush()
        if child.wait(60) != 0:
            raise RuntimeError("the console tab lost its live feed during the measurement")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)


def _figures(result: dict[str, Any]) -> dict[str, float]:
    return {
        "relayed_ttft_p50_ms": result["relayed"]["ttft_p50_ms"],
        "relayed_tokens_per_s": result["relayed"]["tokens_per_s"],
        "direct_tokens_per_s": result["direct"]["tokens_per_s"],
        "tokens_per_s_ratio": result["tokens_per_s_ratio"],
    }


def _median(rows: list[dict[str, float]], key: str) -> float:
    return round(statistics.median(r[key] for r in rows), 3)


async def _setup(f: Fleet, workers: int, slots: int, concurrency: int) -> str:
    """relay.py's fleet: orchestratord and `workers` workers, registered; returns the model."""
    f.start_orchestratord("--heartbeat-stale-ms", "3600000", "--heartbeat-dead-ms", "7200000")
    ids = [f"console-w{i}" for i in range(workers)]
    for wid in ids:
        f.add_worker(wid, slots, "--max-queue", str(concurrency * 2))
    async with httpx.AsyncClient(trust_env=False) as client:
        await f.wait_registered(client, ids)
        return str((await client.get(f.workers[0].url + "/health")).json()["model"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=2, help="relay.py rounds per block")
    p.add_argument("--blocks", type=int, default=4, help="blocks per condition, alternating")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--slots", type=int, default=8, help="slots per worker")
    p.add_argument("--hold-tab", metavar="URL", help=argparse.SUPPRESS)
    p.add_argument("--profile", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    chromium = os.environ.get("LLORCH_CHROMIUM") or shutil.which("chromium")
    if args.hold_tab:
        assert chromium is not None and args.profile is not None
        sys.exit(hold_tab(args.hold_tab, args.profile, chromium))
    if args.model is None:
        p.error("--model is required")
    if chromium is None:
        print(json.dumps({"bench": "console_load", "skipped": "chromium is not installed"}))
        return
    tmp = Path(tempfile.mkdtemp(prefix="llorch-bench-console-"))
    rows: dict[str, list[dict[str, float]]] = {"without": [], "with": []}
    with fleet(tmp, args.model, {TENANT: KEY}) as f:
        model = asyncio.run(_setup(f, args.workers, args.slots, args.concurrency))
        assert f.orch is not None

        def block(condition: str) -> None:
            result = asyncio.run(measure(f, model, args.concurrency, args.max_tokens, args.rounds))
            rows[condition].append(_figures(result))

        for b in range(args.blocks):
            for condition in ("without", "with") if b % 2 == 0 else ("with", "without"):
                if condition == "with":
                    with console_tab(f.orch.url, tmp / f"profile-{b}", chromium):
                        block(condition)
                else:
                    block(condition)
    keys = ("relayed_ttft_p50_ms", "relayed_tokens_per_s", "direct_tokens_per_s")
    med = {c: {k: _median(rows[c], k) for k in keys} for c in rows}
    without_tps = [r["relayed_tokens_per_s"] for r in rows["without"]]
    report = {
        "bench": "console_load",
        "model": model,
        "concurrency": args.concurrency,
        "max_tokens": args.max_tokens,
        "blocks": args.blocks,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "blocks_without": rows["without"],
        "blocks_with": rows["with"],
        "median_without": med["without"],
        "median_with": med["with"],
        "with_over_without": {
            "relayed_tokens_per_s": round(
                med["with"]["relayed_tokens_per_s"] / med["without"]["relayed_tokens_per_s"], 3
            ),
            "relayed_ttft_p50_ms": round(
                med["with"]["relayed_ttft_p50_ms"] / med["without"]["relayed_ttft_p50_ms"], 3
            ),
        },
        # The spread of the blocks without the console, relative to their median: the noise.
        "noise_relayed_tokens_per_s": round(
            (max(without_tps) - min(without_tps)) / statistics.median(without_tps), 3
        ),
        "logs": str(tmp),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
