"""Load: orchestratord with a deep queue and many open event streams; RSS and submit latency.

Starts one orchestratord and one 1-slot llorch-workerd on loopback, fills the worker's slot with
one long task and then SIGSTOPs the worker, so every later task waits in orchestratord's queue
(the worker stays registered and `ready`: heartbeat and read timeouts are set past the run).
Then, in one run:

1. serial `POST /v2/tasks` latency at 0, `--mid` and `--deep` tasks queued (target: flat
   within 2x from 0 to `--deep`);
2. with `--queued` tasks queued and `--streams` open `GET /v2/tasks/{id}/events` readers:
   orchestratord's RSS (target < 300 MB) and serial submit latency p50/p99 (target p99 <
   50 ms).

The readers then leave, and orchestratord cancels their tasks after the disconnect grace (2 s
here); the queue is filled to `--deep` once those are gone, so the deepest figure is a submit
at that depth and not one queued behind a thousand cancellations.

Prints one JSON object. Black-box: only HTTP and signals. The defaults are a tenth of the
issue's sizes so `make bench` stays short; `--full` runs 1,000 streams, 10,000 queued, and
latency at 0, 8,000 and 16,000 queued.

The store is SQLite in the run's directory, or `--db-url URL` (an empty database), or
`--postgres`: a throwaway PostgreSQL cluster started for the run (as the tests start theirs,
tests/stores.py; fsync on, `synchronous_commit=off` like SQLite's `synchronous=NORMAL`).
`--both` runs SQLite and then PostgreSQL, one after the other, and prints both side by side.

    python bench/load.py --model .cache/models/llorch-tiny.gguf [--full] [--postgres | --both]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._fleet import (
    ADMIN_TOKEN,
    Fleet,
    fleet,
    percentile,
    raise_fd_limit,
    rss_mb,
    sse_events,
)
from tests import stores

TENANT, KEY = "load", "load-key"
HOLD_TOKENS = 4000  # the task that keeps the worker's only slot while it is stopped
# The bench's PostgreSQL keeps fsync (a test cluster does not) and, like SQLite's
# synchronous=NORMAL in WAL mode, lets the WAL writer flush commits shortly after them.
PG_SETTINGS = ("synchronous_commit=off",)


class Load:
    def __init__(self, f: Fleet, model: str) -> None:
        self.f = f
        self.model = model
        self.headers = f.client_headers(TENANT)
        self.n = 0
        self.transport_errors: collections.Counter[str] = collections.Counter()

    @property
    def url(self) -> str:
        assert self.f.orch is not None
        return self.f.orch.url

    def body(self, max_tokens: int = 4) -> dict[str, Any]:
        self.n += 1
        return {"model": self.model, "prompt": f"load {self.n}", "max_tokens": max_tokens}

    async def submit(self, client: httpx.AsyncClient) -> tuple[str, float]:
        """One POST /v2/tasks: (task id, latency in ms). A connection lost on a loaded machine
        is retried (and counted), so one reset does not end the run."""
        body = self.body()
        for attempt in range(3):
            start = time.perf_counter()
            try:
                r = await client.post(self.url + "/v2/tasks", json=body, headers=self.headers)
                break
            except httpx.TransportError as e:
                self.transport_errors[type(e).__name__] += 1
                if attempt == 2:
                    raise
        ms = (time.perf_counter() - start) * 1000
        if r.status_code != 202:
            raise RuntimeError(f"submit: {r.status_code} {r.text[:300]}")
        return str(r.json()["task_id"]), ms

    async def depth(self, client: httpx.AsyncClient) -> int:
        """Tasks queued, from GET /health (a number, or a number per lane)."""
        d = (await client.get(self.url + "/health")).json()["queue_depth"]
        return sum(d.values()) if isinstance(d, dict) else int(d)

    async def fill(self, client: httpx.AsyncClient, to: int, ids: list[str]) -> float:
        """Submit (32 at a time) until `to` tasks are queued; returns the seconds it took."""
        start = time.perf_counter()
        missing = to - await self.depth(client)
        sem = asyncio.Semaphore(32)

        async def one() -> None:
            async with sem:
                ids.append((await self.submit(client))[0])

        await asyncio.gather(*(one() for _ in range(max(0, missing))))
        return round(time.perf_counter() - start, 1)

    async def wait_depth(self, client: httpx.AsyncClient, at_most: int, within_s: float) -> None:
        """Until at most `at_most` tasks are queued, and one second more for the work that
        follows them (records written, logs)."""
        deadline = time.monotonic() + within_s
        while await self.depth(client) > at_most:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the queue did not drain to {at_most} in {within_s:g} s")
            await asyncio.sleep(0.2)
        await asyncio.sleep(1.0)

    async def serial(self, client: httpx.AsyncClient, n: int) -> dict[str, Any]:
        queued = await self.depth(client)
        lat = [(await self.submit(client))[1] for _ in range(n)]
        return {
            "queued_before": queued,
            "submits": n,
            "p50_ms": percentile(lat, 50),
            "p99_ms": percentile(lat, 99),
            "mean_ms": round(statistics.fmean(lat), 3),
        }


async def hold_stream(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], opened: asyncio.Event
) -> None:
    """An event reader that stays connected: signals after its first event, reads on."""
    async with client.stream("GET", url, headers=headers) as r:
        if r.status_code != 200:
            raise RuntimeError(f"events: {r.status_code}")
        async for _ in sse_events(r):
            opened.set()
    opened.set()


async def run(args: argparse.Namespace, f: Fleet, db_url: str | None) -> dict[str, Any]:
    capacity = args.deep + args.queued + 4 * args.serial + 1000
    f.start_orchestratord(
        *(("--db-url", db_url) if db_url else ()),
        "--queue-capacity",
        str(capacity),
        "--heartbeat-stale-ms",
        "3600000",
        "--heartbeat-dead-ms",
        "7200000",
        "--read-timeout-s",
        "3600",
        # The event readers' tasks are cancelled this long after their readers leave.
        "--disconnect-grace-ms",
        "2000",
    )
    w = f.add_worker("load-w0", 1, "--n-ctx", str(HOLD_TOKENS + 64), "--threads", "1")
    timeout = httpx.Timeout(120.0, connect=10.0)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    async with (
        httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client,
        httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(), trust_env=False) as readers,
    ):
        await f.wait_registered(client, ["load-w0"])
        if args.limits:
            await set_limits(f, client)
        model = str((await client.get(w.url + "/health")).json()["model"])
        load = Load(f, model)
        # Fill the only slot, then freeze the worker mid-generation: later tasks all queue.
        hold_body = {**load.body(HOLD_TOKENS), "ignore_eos": True}
        headers = {**load.headers, "accept": "text/event-stream"}
        async with client.stream(
            "POST", load.url + "/v2/tasks", json=hold_body, headers=headers
        ) as hold:
            async for event, _ in sse_events(hold):
                if event == "token":
                    w.signal(signal.SIGSTOP)
                    break
                if event in ("end", "error"):
                    raise RuntimeError(f"the holding task ended early ({event})")
            return await measure(args, load, client, readers)


# Every limit set, none reached: each submit runs every check (ORCH-320), each end the
# accounting (ORCH-326); usage accounting itself is always on in a build that has it.
BENCH_LIMITS = {
    "concurrency": 10**9,
    "rpm": 10**9,
    "tpm": 10**12,
    "daily_tokens": 10**15,
    "monthly_tokens": 10**15,
}


async def set_limits(f: Fleet, client: httpx.AsyncClient) -> None:
    assert f.orch is not None
    r = await client.put(
        f"{f.orch.url}/v2/admin/tenants/{TENANT}/limits",
        json=BENCH_LIMITS,
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    r.raise_for_status()


async def measure(
    args: argparse.Namespace, load: Load, client: httpx.AsyncClient, readers: httpx.AsyncClient
) -> dict[str, Any]:
    assert load.f.orch is not None
    pid = load.f.orch.pid
    ids: list[str] = []
    serial: list[dict[str, Any]] = []
    rss: dict[str, float] = {"idle": rss_mb(pid)}
    fills: dict[str, float] = {}

    serial.append(await load.serial(client, args.serial))
    fills[str(args.mid)] = await load.fill(client, args.mid, ids)
    serial.append(await load.serial(client, args.serial))

    fills[str(args.queued)] = await load.fill(client, args.queued, ids)
    rss["queued"] = rss_mb(pid)
    opened = [asyncio.Event() for _ in range(args.streams)]
    streams = [
        asyncio.create_task(
            hold_stream(readers, f"{load.url}/v2/tasks/{ids[i]}/events", load.headers, opened[i])
        )
        for i in range(args.streams)
    ]
    start = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(e.wait() for e in opened)), 300)
    open_s = round(time.perf_counter() - start, 1)
    failed = [s for s in streams if s.done() and s.exception() is not None]
    if failed:
        raise RuntimeError(f"{len(failed)} streams failed: {failed[0].exception()!r}")
    rss["queued_and_streams"] = rss_mb(pid)
    under_load = await load.serial(client, args.serial_at_load)
    rss["after_submits_at_load"] = rss_mb(pid)
    before_close = await load.depth(client)
    for s in streams:
        s.cancel()
    await asyncio.gather(*streams, return_exceptions=True)
    # The readers' tasks are cancelled once their readers are gone for the disconnect grace
    # (ORCH-024). Wait for that wave to pass: the deep figure is a submit at that depth, not a
    # submit queued behind a thousand cancellations.
    await load.wait_depth(client, before_close - args.streams, within_s=120)

    fills[str(args.deep)] = await load.fill(client, args.deep, ids)
    serial.append(await load.serial(client, args.serial))
    rss["deep"] = rss_mb(pid)
    flat = round(serial[-1]["p50_ms"] / serial[0]["p50_ms"], 2)
    return {
        "bench": "load",
        "tenant_limits": args.limits,
        "cpu_count": os.cpu_count(),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "at_load": {
            "queued": under_load["queued_before"],
            "open_streams": args.streams,
            "streams_open_s": open_s,
            "rss_mb": rss["queued_and_streams"],
            "submit": under_load,
        },
        "serial_submit": serial,
        "serial_p50_ratio_deep_vs_empty": flat,
        "rss_mb": rss,
        "fill_s": fills,
        "client_transport_errors_retried": dict(load.transport_errors),
        "targets": {
            "rss_mb_max": 300,
            "submit_p99_ms_at_load_max": 50,
            "serial_p50_ratio_max": 2.0,
        },
        "meets": {
            "rss": rss["queued_and_streams"] < 300,
            "submit_p99_at_load": under_load["p99_ms"] < 50,
            "serial_flat": flat <= 2.0,
        },
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--full", action="store_true", help="the issue's sizes (10x the defaults)")
    p.add_argument("--streams", type=int, default=None, help="open event streams [100; 1000]")
    p.add_argument("--queued", type=int, default=None, help="queued tasks [1000; 10000]")
    p.add_argument("--mid", type=int, default=None, help="[800; 8000]")
    p.add_argument("--deep", type=int, default=None, help="[1600; 16000]")
    p.add_argument("--serial", type=int, default=200, help="serial submits per depth")
    p.add_argument("--serial-at-load", type=int, default=500)
    p.add_argument(
        "--limits",
        action="store_true",
        help="set every per-tenant limit of the load tenant (high: none is reached)",
    )
    store = p.add_mutually_exclusive_group()
    store.add_argument("--db-url", help="orchestratord's store: an empty database [SQLite]")
    store.add_argument(
        "--postgres", action="store_true", help="a throwaway PostgreSQL cluster as the store"
    )
    store.add_argument("--both", action="store_true", help="SQLite, then PostgreSQL")
    args = p.parse_args(argv)
    scale = 10 if args.full else 1
    for name, quick in (("streams", 100), ("queued", 1000), ("mid", 800), ("deep", 1600)):
        if getattr(args, name) is None:
            setattr(args, name, quick * scale)
    return args


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    """The URL of an empty database in a PostgreSQL cluster that lives for the block."""
    bindir = stores.find_bindir()
    if bindir is None:
        raise SystemExit(
            "load.py: PostgreSQL's server binaries (initdb, pg_ctl) are missing; "
            "apt-get install postgresql, or set LLORCH_PG_BINDIR"
        )
    with stores.pg_cluster(bindir, PG_SETTINGS) as cluster:
        yield cluster.new_database()


def one_run(args: argparse.Namespace, db_url: str | None) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="llorch-load-"))
    with fleet(tmp, args.model, {TENANT: KEY}) as f:
        report = asyncio.run(run(args, f, db_url))
    report["store"] = "sqlite" if db_url is None else stores.backend(db_url)
    if db_url is not None and report["store"] == "postgresql" and args.db_url is None:
        report["postgresql_settings"] = list(PG_SETTINGS)
    report["logs"] = str(tmp)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit(args.streams * 2 + 1024)
    report: dict[str, Any]
    if args.both:
        lite = one_run(args, None)
        with postgres() as url:
            pg = one_run(args, url)
        p99 = [r["at_load"]["submit"]["p99_ms"] for r in (lite, pg)]
        report = {
            "bench": "load",
            "stores": ["sqlite", "postgresql"],
            "submit_p99_ms_at_load": dict(zip(["sqlite", "postgresql"], p99, strict=True)),
            "p99_ratio_postgresql_vs_sqlite": round(p99[1] / p99[0], 2),
            "sqlite": lite,
            "postgresql": pg,
        }
    elif args.postgres:
        with postgres() as url:
            report = one_run(args, url)
    else:
        report = one_run(args, args.db_url)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
