"""Real orchestratord and llorch-workerd processes on loopback for the end-to-end tests."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import Proc, free_port, spawn, spawn_worker

CT = "e2e-cluster-token"
AUTH = {"authorization": f"Bearer {CT}"}
AT = "e2e-admin-token"
ADMIN = {"authorization": f"Bearer {AT}"}
MODEL = "llorch-tiny"


@dataclass
class Event:
    id: int
    event: str
    data: dict[str, Any]


def read_events(
    lines: Iterator[str], stop_after: int | None = None, until: str | None = None
) -> list[Event]:
    """Parse SSE lines into events (comments skipped); stop after `stop_after` tokens, or at
    the first event named `until`."""
    out: list[Event] = []
    cur: dict[str, str] = {}
    for line in lines:
        if line == "":
            if "data" in cur:
                out.append(
                    Event(
                        int(cur.get("id", "-1")),
                        cur.get("event", "message"),
                        json.loads(cur["data"]),
                    )
                )
                if out[-1].event in ("end", "error") or out[-1].event == until:
                    return out
                tokens = sum(e.event == "token" for e in out)
                if stop_after is not None and out[-1].event == "token" and tokens >= stop_after:
                    return out
            cur = {}
        elif not line.startswith(":"):
            key, _, value = line.partition(":")
            cur[key] = value[1:] if value.startswith(" ") else value
    return out


@dataclass
class OpenStream:
    """A task submitted with Accept: text/event-stream, its first events already read."""

    task_id: str
    lines: Iterator[str]  # held: a collected reader would close the stream
    head: list[Event]


@contextlib.contextmanager
def open_task_stream(
    url: str,
    body: dict[str, Any],
    head: int = 3,
    timeout: float = 30,
    headers: dict[str, str] | None = None,
) -> Iterator[OpenStream]:
    """Submit a streaming task and read its first `head` events; closing cancels the task."""
    with httpx.stream(
        "POST",
        url + "/v2/tasks",
        json=body,
        timeout=timeout,
        headers={"accept": "text/event-stream", **(headers or {})},
    ) as r:
        assert r.status_code == 200, r.read()
        lines = r.iter_lines()
        first = read_events(lines, stop_after=head) if head else []
        yield OpenStream(r.headers.get("x-llorch-task-id", ""), lines, first)


def stream_task(url: str, body: dict[str, Any], timeout: float = 60) -> list[Event]:
    """Submit with Accept: text/event-stream and read the task to its end."""
    with open_task_stream(url, body, head=0, timeout=timeout) as s:
        return s.head + read_events(s.lines)


def workers(url: str) -> dict[str, dict[str, Any]]:
    r = httpx.get(url + "/v2/workers", headers=AUTH, timeout=5)
    r.raise_for_status()
    return {w["id"]: w for w in r.json()["workers"]}


def wait_for(predicate: Any, timeout: float = 15.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"timed out waiting for {what}")


@contextlib.contextmanager
def orchestratord(
    tmp: Path, *extra: str, port: int | None = None, state_dir: Path | None = None
) -> Iterator[Proc]:
    port = port or free_port()
    args = [
        "orchestratord",
        "--port",
        str(port),
        "--state-dir",
        str(state_dir or tmp / "state"),
        "--cluster-token",
        CT,
        "--admin-token",
        AT,
        "--heartbeat-stale-ms",
        "1500",
        "--heartbeat-dead-ms",
        "4000",
        "--log-level",
        "info",
        *extra,
    ]
    with spawn(args, port, tmp / f"orchd-{port}.log", "/health") as p:
        yield p


@contextlib.contextmanager
def worker(
    model: Path,
    tmp: Path,
    orch_url: str,
    worker_id: str,
    *,
    slots: int = 1,
    extra: Sequence[str] = (),
) -> Iterator[Proc]:
    """A real worker registered with `orch_url` (waits until orchestratord lists it ready)."""
    args = [
        "--orchestrator-url",
        orch_url,
        "--worker-id",
        worker_id,
        "--heartbeat-interval",
        "0.25",
        "--n-ctx",
        "16384",
        "--pool",
        "test",
        *extra,
    ]
    with spawn_worker(model, tmp, slots=slots, token=CT, extra=args) as p:
        wait_for(
            lambda: workers(orch_url).get(worker_id, {}).get("state") == "ready",
            what=f"worker {worker_id} to register",
        )
        yield p
