"""Soak: many short tasks over two real workers while clients drop, cancel and processes die.

Starts one orchestratord and two llorch-workerd processes on loopback (the tiny test model),
then runs `--clients` concurrent clients until `--tasks` tasks were accepted. Each client
picks, per task: read the stream to its end; drop the connection before the first token;
drop it after the first token; cancel a running task; cancel a queued one; or submit without
a stream and follow GET .../events. Meanwhile a supervisor SIGKILLs one worker every
`--kill-every` accepted tasks and starts it again (same id and port), and restarts
orchestratord once (SIGTERM, same SQLite database). At the end it checks:

- every accepted task is in a terminal state with a reason (GET /v2/tasks/{id} for each id);
- a stream read to its end agrees with the task's record;
- no worker slot stays busy (each worker's GET /health);
- orchestratord counts no slot busy that its worker reports idle (GET /v2/workers);
- orchestratord's RSS after `--tasks` is within 10% of its RSS after `--rss-baseline-at`
  (sampled again every `--rss-baseline-at` tasks, so a report shows how it grew);
- orchestratord still runs new tasks afterwards.

It prints one JSON object (figures and a pass/fail per check) and exits 1 if a check failed.
Black-box: only HTTP and signals, so it runs against any orchestratord build.

    python bench/soak.py --model .cache/models/llorch-tiny.gguf            # 1,500 tasks
    python bench/soak.py --model .cache/models/llorch-tiny.gguf --full     # 100,000 tasks

--full took 14 minutes on a shared 2-core machine (~160 tasks accepted per second, then one GET
per task); its baseline is at 10,000 tasks, so it checks the growth from 10,000 tasks to
100,000.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._fleet import TERMINAL, Fleet, fleet, has_flag, raise_fd_limit, rss_mb, sse_events

TENANTS = {"soak-a": "soak-key-a", "soak-b": "soak-key-b", "soak-c": "soak-key-c"}
# What a client does with one task, and how often.
ACTIONS = {
    "stream": 40,
    "drop_before_token": 12,
    "drop_after_token": 12,
    "cancel_running": 10,
    "cancel_queued": 8,
    "submit_follow": 18,
}
SETTLE_S = 30.0  # how long the end state may take to settle (many heartbeats)


@dataclass
class Soak:
    args: argparse.Namespace
    fleet: Fleet
    model: str
    rng: random.Random
    issued: int = 0
    inflight: int = 0
    accepted: dict[str, str] = field(default_factory=dict)  # task id -> tenant
    # task id -> the terminal event a client read to the end: ("end", stop_reason) / ("error", code)
    seen_end: dict[str, tuple[str, str]] = field(default_factory=dict)
    actions: collections.Counter[str] = field(default_factory=collections.Counter)
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    transport_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    kills: int = 0
    restarts: int = 0
    rss: dict[str, float] = field(default_factory=dict)
    rss_samples: dict[int, float] = field(default_factory=dict)  # accepted tasks -> MB
    restarting: asyncio.Event = field(default_factory=asyncio.Event)
    next_kill: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def orch_url(self) -> str:
        assert self.fleet.orch is not None
        return self.fleet.orch.url

    def body(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "prompt": f"soak {self.rng.randrange(1 << 30)}",
            "max_tokens": self.rng.randint(1, self.args.max_tokens),
            "ignore_eos": True,
            "temperature": 0.7,
        }

    def out_of_time(self) -> bool:
        return time.monotonic() - self.started > float(self.args.time_limit)

    # --- one client ----------------------------------------------------------------------

    async def client(self, client: httpx.AsyncClient) -> None:
        while len(self.accepted) + self.inflight < self.args.tasks and not self.out_of_time():
            self.issued += 1
            self.inflight += 1
            tenant = self.rng.choice(list(TENANTS))
            action = self.rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
            try:
                await getattr(self, action)(client, tenant)
                self.actions[action] += 1
            except RefusedError as e:  # the queue full, say: counted, never fatal
                self.refused[str(e)] += 1
                await asyncio.sleep(0.2)
            except httpx.TransportError as e:  # orchestratord restarting, or a worker killed
                self.transport_errors[type(e).__name__] += 1
                await asyncio.sleep(0.2)
            finally:
                self.inflight -= 1
            await self.maybe_disrupt()

    def accept(self, task_id: str, tenant: str) -> None:
        self.accepted[task_id] = tenant
        n = len(self.accepted)
        if n % self.args.rss_baseline_at == 0:
            mb = rss_mb(self.fleet.orch.pid)  # type: ignore[union-attr]
            self.rss_samples[n] = mb
            if n == self.args.rss_baseline_at:
                self.rss["baseline"] = mb
        if n % 500 == 0:
            print(f"soak: {n} accepted, {time.monotonic() - self.started:.0f}s", file=sys.stderr)

    async def submit_stream(
        self, client: httpx.AsyncClient, tenant: str
    ) -> tuple[httpx.Response, str, Any]:
        """POST with Accept: text/event-stream; returns the open response and its task id."""
        headers = {**self.fleet.client_headers(tenant), "accept": "text/event-stream"}
        req = client.build_request(
            "POST", self.orch_url + "/v2/tasks", json=self.body(), headers=headers
        )
        r = await client.send(req, stream=True)
        if r.status_code != 200:
            await r.aclose()
            raise RefusedError(f"HTTP {r.status_code}")
        task_id = r.headers.get("x-llorch-task-id", "")
        self.accept(task_id, tenant)
        return r, task_id, sse_events(r)

    async def read_to_end(self, task_id: str, events: Any) -> None:
        async for event, data in events:
            if event == "end":
                self.seen_end[task_id] = ("end", str(data.get("stop_reason")))
                return
            if event == "error":
                self.seen_end[task_id] = ("error", str(data.get("code")))
                return

    async def stream(self, client: httpx.AsyncClient, tenant: str) -> None:
        r, task_id, events = await self.submit_stream(client, tenant)
        try:
            await self.read_to_end(task_id, events)
        finally:
            await r.aclose()

    async def drop_before_token(self, client: httpx.AsyncClient, tenant: str) -> None:
        r, _, _ = await self.submit_stream(client, tenant)
        await r.aclose()  # the headers came; no event read

    async def drop_after_token(self, client: httpx.AsyncClient, tenant: str) -> None:
        r, _, events = await self.submit_stream(client, tenant)
        try:
            async for event, _ in events:
                if event in ("token", "end", "error"):
                    break
        finally:
            await r.aclose()

    async def cancel_running(self, client: httpx.AsyncClient, tenant: str) -> None:
        r, task_id, events = await self.submit_stream(client, tenant)
        try:
            async for event, data in events:
                if event == "token":
                    await self.cancel(client, tenant, task_id)
                    await self.read_to_end(task_id, events)
                    return
                if event in ("end", "error"):
                    key = "stop_reason" if event == "end" else "code"
                    self.seen_end[task_id] = (event, str(data.get(key)))
                    return
        finally:
            await r.aclose()

    async def submit(self, client: httpx.AsyncClient, tenant: str) -> str:
        r = await client.post(
            self.orch_url + "/v2/tasks", json=self.body(), headers=self.fleet.client_headers(tenant)
        )
        if r.status_code != 202:
            raise RefusedError(f"HTTP {r.status_code}")
        task_id = str(r.json()["task_id"])
        self.accept(task_id, tenant)
        return task_id

    async def cancel(self, client: httpx.AsyncClient, tenant: str, task_id: str) -> None:
        r = await client.post(
            f"{self.orch_url}/v2/tasks/{task_id}/cancel", headers=self.fleet.client_headers(tenant)
        )
        if r.status_code not in (200, 202, 204):
            self.refused[f"cancel HTTP {r.status_code}"] += 1

    async def cancel_queued(self, client: httpx.AsyncClient, tenant: str) -> None:
        task_id = await self.submit(client, tenant)
        await self.cancel(client, tenant, task_id)

    async def submit_follow(self, client: httpx.AsyncClient, tenant: str) -> None:
        task_id = await self.submit(client, tenant)
        url = f"{self.orch_url}/v2/tasks/{task_id}/events"
        async with client.stream("GET", url, headers=self.fleet.client_headers(tenant)) as r:
            if r.status_code != 200:
                raise RefusedError(f"events HTTP {r.status_code}")
            await self.read_to_end(task_id, sse_events(r))

    # --- disruption ----------------------------------------------------------------------

    async def maybe_disrupt(self) -> None:
        """Kill a worker every `kill_every` accepted tasks, restart orchestratord once; one
        client does it while the others carry on."""
        n = len(self.accepted)
        if self.restarts == 0 and n >= self.args.restart_at and not self.restarting.is_set():
            self.restarting.set()
            orch = self.fleet.orch
            assert orch is not None
            print(f"soak: restarting orchestratord at {n}", file=sys.stderr)
            await asyncio.to_thread(orch.stop)
            await asyncio.to_thread(orch.start)
            self.restarts += 1
        if n >= self.next_kill + self.args.kill_every:
            self.next_kill = n
            w = self.fleet.workers[self.kills % len(self.fleet.workers)]
            self.kills += 1
            print(f"soak: SIGKILL {w.log.stem} at {n}", file=sys.stderr)
            w.kill()
            await asyncio.to_thread(w.start)

    # --- end checks ----------------------------------------------------------------------

    async def final_records(self, client: httpx.AsyncClient) -> dict[str, dict[str, Any]]:
        """GET every accepted task, waiting (up to SETTLE_S) for unfinished ones to end."""
        records: dict[str, dict[str, Any]] = {}
        pending = list(self.accepted)
        deadline = time.monotonic() + SETTLE_S
        sem = asyncio.Semaphore(16)

        async def get(task_id: str) -> None:
            async with sem:
                r = await client.get(
                    f"{self.orch_url}/v2/tasks/{task_id}",
                    headers=self.fleet.client_headers(self.accepted[task_id]),
                )
                records[task_id] = (
                    r.json() if r.status_code == 200 else {"status": f"HTTP {r.status_code}"}
                )

        while pending:
            await asyncio.gather(*(get(t) for t in pending))
            pending = [t for t in pending if records[t].get("status") not in TERMINAL]
            if not pending or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        return records

    async def slot_state(self, client: httpx.AsyncClient) -> dict[str, dict[str, int]]:
        """Per worker: busy slots it reports itself, and busy slots orchestratord counts."""
        views = {w["url"].rstrip("/"): w for w in await self.fleet.fleet_view(client)}
        out: dict[str, dict[str, int]] = {}
        for w in self.fleet.workers:
            health = (await client.get(w.url + "/health")).json()
            view = views.get(w.url, {})
            out[str(health.get("worker_id", w.port))] = {
                "worker_busy": int(health["slots_busy"]),
                "worker_queued": int(health.get("queued", 0)),
                "orchestratord_busy": int(view.get("slots_busy", -1)),
            }
        return out

    async def settled_slots(self, client: httpx.AsyncClient) -> dict[str, dict[str, int]]:
        deadline = time.monotonic() + SETTLE_S
        while True:
            state = await self.slot_state(client)
            idle = all(
                s["worker_busy"] == 0 and s["worker_queued"] == 0 and s["orchestratord_busy"] == 0
                for s in state.values()
            )
            if idle or time.monotonic() > deadline:
                return state
            await asyncio.sleep(0.5)

    async def still_serves(self, client: httpx.AsyncClient) -> list[str]:
        """Statuses of 4 fresh tasks, submitted together and given 60 s (all should succeed)."""
        tenant = next(iter(TENANTS))

        async def one() -> str:
            try:
                task_id = await self.submit(client, tenant)
                url = f"{self.orch_url}/v2/tasks/{task_id}"
                while True:
                    r = await client.get(url, headers=self.fleet.client_headers(tenant))
                    status = str(r.json().get("status"))
                    if status in TERMINAL:
                        return status
                    await asyncio.sleep(0.2)
            except (httpx.HTTPError, RefusedError) as e:
                return f"{type(e).__name__}: {e}"

        tasks = [asyncio.create_task(one()) for _ in range(4)]
        done, pending = await asyncio.wait(tasks, timeout=60)
        for t in pending:
            t.cancel()
        return [t.result() if t in done else "not finished after 60 s" for t in tasks]


class RefusedError(Exception):
    """orchestratord answered a submission with something other than acceptance."""


def reason_of(record: dict[str, Any]) -> str | None:
    return record.get("stop_reason") or record.get("error_code")


def record_matches(seen: tuple[str, str], record: dict[str, Any]) -> bool:
    kind, value = seen
    if kind == "error":
        return record.get("status") == "failed" and record.get("error_code") == value
    if value == "CANCELLED":
        return record.get("status") == "cancelled"
    return record.get("status") == "succeeded" and record.get("stop_reason") == value


async def run(args: argparse.Namespace, f: Fleet) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=64)
    timeout = httpx.Timeout(60.0, connect=5.0)
    orch_extra = ["--queue-capacity", "4096", "--heartbeat-stale-ms", "2000"]
    orch_extra += ["--heartbeat-dead-ms", "6000", "--read-timeout-s", "30", *args.orch_arg]
    f.start_orchestratord(*orch_extra)
    worker_extra = ["--heartbeat-interval", "0.5", "--n-ctx", "512", "--pool", "soak"]
    worker_extra += ["--max-queue", "64", "--threads", "1"]
    ids = [f"soak-w{i}" for i in range(2)]
    for wid in ids:
        f.add_worker(wid, args.slots, *worker_extra)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        await f.wait_registered(client, ids)
        model = str((await client.get(f.workers[0].url + "/health")).json()["model"])
        soak = Soak(args, f, model, random.Random(args.seed))
        soak.next_kill = 0
        await asyncio.gather(*(soak.client(client) for _ in range(args.clients)))
        wall = time.monotonic() - soak.started
        assert f.orch is not None
        soak.rss["end_of_load"] = rss_mb(f.orch.pid)
        records = await soak.final_records(client)
        slots = await soak.settled_slots(client)
        soak.rss["settled"] = rss_mb(f.orch.pid)
        fresh = await soak.still_serves(client)

    statuses = collections.Counter(str(r.get("status")) for r in records.values())
    reasons = collections.Counter(str(reason_of(r)) for r in records.values())
    unfinished = [t for t, r in records.items() if r.get("status") not in TERMINAL]
    no_reason = [t for t, r in records.items() if r.get("status") in TERMINAL and not reason_of(r)]
    mismatched = [
        {
            "task": t,
            "stream": list(seen),
            "record": {k: records[t].get(k) for k in ("status", "stop_reason", "error_code")},
        }
        for t, seen in soak.seen_end.items()
        if t in records and not record_matches(seen, records[t])
    ]
    busy = {w: s for w, s in slots.items() if s["worker_busy"] or s["worker_queued"]}
    phantom = {w: s for w, s in slots.items() if s["orchestratord_busy"] > s["worker_busy"]}
    base, end = soak.rss.get("baseline"), soak.rss["end_of_load"]
    growth = round(end / base - 1, 4) if base else None
    checks = {
        "all_accepted_terminal_with_reason": {
            "pass": bool(records) and not unfinished and not no_reason,
            "accepted": len(soak.accepted),
            "unfinished": len(unfinished),
            "unfinished_sample": unfinished[:10],
            "terminal_without_reason": len(no_reason),
            "terminal_without_reason_sample": no_reason[:10],
        },
        "records_match_streams": {
            "pass": not mismatched,
            "streams_read_to_end": len(soak.seen_end),
            "mismatched": len(mismatched),
            "mismatched_sample": mismatched[:10],
        },
        "no_worker_slot_busy": {"pass": not busy, "busy": busy},
        "no_phantom_busy_slots": {"pass": not phantom, "phantom": phantom, "slots": slots},
        "rss_within_10pct": {
            "pass": growth is not None and growth <= 0.10,
            "baseline_at_tasks": args.rss_baseline_at,
            "rss_baseline_mb": base,
            "rss_end_mb": end,
            "growth": growth,
        },
        "still_serves_new_tasks": {"pass": fresh == ["succeeded"] * 4, "statuses": fresh},
    }
    return {
        "bench": "soak",
        "config": {
            "tasks": args.tasks,
            "clients": args.clients,
            "slots_per_worker": args.slots,
            "max_tokens": args.max_tokens,
            "kill_every": args.kill_every,
            "restart_at": args.restart_at,
            "time_limit_s": args.time_limit,
            "seed": args.seed,
            "orchestratord_args": orch_extra,
        },
        "figures": {
            "wall_s": round(wall, 1),
            "issued": soak.issued,
            "accepted": len(soak.accepted),
            "accepted_per_s": round(len(soak.accepted) / wall, 1),
            "actions": dict(soak.actions),
            "refused": dict(soak.refused),
            "client_transport_errors": dict(soak.transport_errors),
            "worker_kills": soak.kills,
            "orchestratord_restarts": soak.restarts,
            "statuses": dict(statuses),
            "reasons": dict(reasons),
            "rss_mb": soak.rss,
            "rss_mb_by_accepted": soak.rss_samples,
        },
        "checks": checks,
        "pass": all(c["pass"] for c in checks.values()),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--full", action="store_true", help="the issue's size: 100,000 tasks")
    p.add_argument("--tasks", type=int, default=None, help="tasks to submit [1500; --full 100000]")
    p.add_argument("--clients", type=int, default=24)
    p.add_argument("--slots", type=int, default=4, help="slots per worker")
    p.add_argument("--max-tokens", type=int, default=6, help="each task asks 1..N tokens")
    p.add_argument("--kill-every", type=int, default=300, help="SIGKILL a worker every N tasks")
    p.add_argument("--rss-baseline-at", type=int, default=None, help="[tasks / 10]")
    p.add_argument("--restart-at", type=int, default=None, help="[baseline / 2]")
    p.add_argument(
        "--time-limit", type=float, default=None, help="stop submitting after S s [3600; --full 4x]"
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--orch-arg", action="append", default=[], help="extra orchestratord argument")
    args = p.parse_args(argv)
    if args.tasks is None:
        args.tasks = 100_000 if args.full else 1_500
    if args.time_limit is None:
        args.time_limit = 4 * 3600.0 if args.full else 3600.0
    if args.rss_baseline_at is None:
        args.rss_baseline_at = max(1, args.tasks // 10)
    if args.restart_at is None:
        args.restart_at = max(1, args.rss_baseline_at // 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit(8192)
    if has_flag("orchestratord", "--retain-tasks") and not any(
        a.startswith("--retain-tasks") for a in args.orch_arg
    ):
        # Retention fills by the baseline, so RSS growth after it is a leak, not the cache.
        args.orch_arg += ["--retain-tasks", str(max(1, args.rss_baseline_at // 2))]
    tmp = Path(tempfile.mkdtemp(prefix="llorch-soak-"))
    with fleet(tmp, args.model, TENANTS) as f:
        report = asyncio.run(run(args, f))
    report["logs"] = str(tmp)
    print(json.dumps(report, indent=2))
    return 0 if report["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
