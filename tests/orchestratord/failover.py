"""Killing the worker that serves a task, mid-stream, for the failover tests and
`bench/failover.py --exact` (ORCH-380..ORCH-384): real processes, real signals.

The tiny model writes 200 tokens after a short prompt in tens of milliseconds, faster than a
client can react to a token it read; after LONG_PROMPT (2,800 tokens) each token attends to
the prompt and takes about a millisecond, so a kill sent when the client has read token event
k lands a few tokens after it (the failover event says where).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.orchestratord.cluster import CT, Event, worker
from tests.support import Proc

LONG_PROMPT = "the quick brown fox " * 700  # the tiny model meets no EOS after it


class Fleet:
    """orchestratord and the workers a test starts and kills; each new worker a new id."""

    def __init__(self, tmp: Path, model: Path, stack: contextlib.ExitStack, orch: Proc) -> None:
        self.tmp, self.model, self.stack, self.orch = tmp, model, stack, orch
        self.workers: dict[str, Proc] = {}
        self._n = 0

    @property
    def url(self) -> str:
        return self.orch.url

    def start(self) -> str:
        self._n += 1
        wid = f"f{self._n}"
        self.workers[wid] = self.stack.enter_context(
            worker(self.model, self.tmp, self.url, wid, slots=2)
        )
        return wid

    def alive(self) -> dict[str, Proc]:
        return {k: p for k, p in self.workers.items() if p.proc.poll() is None}


def prime(f: Fleet, wid: str, task: dict[str, Any]) -> None:
    """The conversation's earlier turns were served by every worker: its prompt is in each
    one's prefix cache (straight to the worker, not through the policy's affinity)."""
    body = {k: v for k, v in task.items() if k != "model"} | {"max_tokens": 1}
    with httpx.stream(
        "POST",
        f.workers[wid].url + "/execute",
        json=body,
        headers={"authorization": f"Bearer {CT}"},
        timeout=120,
    ) as r:
        assert r.status_code == 200, r.read()
        for _ in r.iter_lines():
            pass


def iter_events(lines: Iterator[str]) -> Iterator[Event]:
    """SSE lines -> events as they arrive (comments skipped)."""
    cur: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in cur:
                yield Event(
                    int(cur.get("id", "-1")), cur.get("event", "message"), json.loads(cur["data"])
                )
            cur = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            cur[key] = value[1:] if value.startswith(" ") else value


@dataclass
class Run:
    task_id: str
    events: list[Event]
    killed: list[str] = field(default_factory=list)  # worker ids, in kill order

    @property
    def text(self) -> str:
        return "".join(str(e.data["t"]) for e in self.events if e.event == "token")

    @property
    def last(self) -> Event:
        return self.events[-1]

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e.event == name]


def killed_run(
    url: str,
    body: dict[str, Any],
    workers: dict[str, Proc],
    kill_at: list[int],
    *,
    on_failover: Any = None,
    sig: int = signal.SIGKILL,
    timeout: float = 120,
) -> Run:
    """Submit `body` as a streaming task; SIGKILL the worker serving
    it when the client has read `kill_at[0]` token events, the one serving it next at
    `kill_at[1]`, and so on (`sig` SIGSTOP: freeze it instead, a hung host). `on_failover(run)`
    is called at each `failover` event (it may start a worker, or cancel). Returns every event
    the client read."""
    serving: str | None = None
    plan = list(kill_at)
    with httpx.stream(
        "POST",
        url + "/v2/tasks",
        json=body,
        timeout=timeout,
        headers={"accept": "text/event-stream"},
    ) as r:
        assert r.status_code == 200, r.read()
        run = Run(r.headers["x-llorch-task-id"], [])
        tokens = 0
        for ev in iter_events(r.iter_lines()):
            run.events.append(ev)
            if ev.event == "started":
                serving = str(ev.data["worker_id"])
            elif ev.event == "token":
                tokens += 1
                if plan and tokens >= plan[0]:
                    # After a failover no `started` names the worker: the record does.
                    serving = serving or served_by(url, run.task_id)
                    assert serving is not None
                    plan.pop(0)
                    victim = workers[serving]
                    if sig == signal.SIGKILL:
                        victim.kill(signal.SIGKILL)
                    else:
                        os.kill(victim.proc.pid, sig)
                    run.killed.append(serving)
                    serving = None
            elif ev.event == "failover" and on_failover is not None:
                on_failover(run)
            if ev.event in ("end", "error"):
                break
        return run


def served_by(url: str, task_id: str) -> str | None:
    rec = httpx.get(f"{url}/v2/tasks/{task_id}", timeout=10).json()
    worker_id = rec.get("worker_id")
    return str(worker_id) if worker_id else None


def check_continuous(run: Run) -> None:
    """No event id repeats or is skipped; token `i` counts token events from 0."""
    assert [e.id for e in run.events] == list(range(len(run.events))), [
        (e.id, e.event) for e in run.events
    ]
    toks = run.named("token")
    assert [e.data["i"] for e in toks] == list(range(len(toks)))
    assert all("ids" not in e.data for e in toks)  # ORCH-380: orchestratord keeps them
