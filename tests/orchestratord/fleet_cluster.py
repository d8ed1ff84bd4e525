"""A small real fleet for the events, compare and console tests: orchestratord with an admin
token and two tenants' keys, and two real workers on two pools; plus a reader of GET /v2/events
that collects events on a thread, so tests wait on what arrived without timing anything."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.orchestratord.cluster import MODEL, orchestratord, wait_for, worker
from tests.support import Proc

ADMIN = "e2e-admin-token"
KEY_ACME = "key-acme"
KEY_OTHER = "key-other"
__all__ = ["ADMIN", "KEY_ACME", "KEY_OTHER", "MODEL"]


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@dataclass
class Fleet:
    orchestrator: Proc
    workers: dict[str, Proc]
    model: Path
    tmp: Path

    @property
    def url(self) -> str:
        return self.orchestrator.url


@contextlib.contextmanager
def run_fleet(model: Path, tmp: Path, *extra: str) -> Iterator[Fleet]:
    """orchestratord and workers w1 (pool host-a) and w2 (pool host-b), both ready."""
    with (
        orchestratord(
            tmp,
            "--admin-token",
            ADMIN,
            "--api-key",
            f"acme:{KEY_ACME}",
            "--api-key",
            f"other:{KEY_OTHER}",
            *extra,
        ) as orch,
        worker(model, tmp, orch.url, "w1", extra=["--pool", "host-a"]) as w1,
        worker(model, tmp, orch.url, "w2", extra=["--pool", "host-b"]) as w2,
    ):
        yield Fleet(orch, {"w1": w1, "w2": w2}, model, tmp)


@dataclass
class Feed:
    """GET /v2/events read on a thread: `events` grows as they arrive."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def names(self) -> list[str]:
        with self._lock:
            return [n for n, _ in self.events]

    def of(self, name: str) -> list[dict[str, Any]]:
        with self._lock:
            return [d for n, d in self.events if n == name]

    def wait(self, pred: Callable[[Feed], Any], what: str, timeout: float = 30.0) -> Any:
        return wait_for(lambda: pred(self), timeout=timeout, what=what)


@contextlib.contextmanager
def read_feed(url: str, token: str) -> Iterator[Feed]:
    feed = Feed()
    stop = threading.Event()
    client = httpx.Client(timeout=httpx.Timeout(10, read=None), headers=bearer(token))

    def run() -> None:
        try:
            with client.stream("GET", url + "/v2/events") as r:
                feed.status = r.status_code
                if r.status_code != 200:
                    r.read()
                    return
                name, data = "message", ""
                for line in r.iter_lines():
                    if stop.is_set():
                        return
                    if line.startswith("event: "):
                        name = line[7:]
                    elif line.startswith("data: "):
                        data = line[6:]
                    elif line == "" and data:
                        with feed._lock:
                            feed.events.append((name, json.loads(data)))
                        name, data = "message", ""
        except httpx.HTTPError:
            return

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: feed.status is not None, what="GET /v2/events to answer")
        yield feed
    finally:
        stop.set()
        client.close()  # ends the read; the thread exits
        thread.join(timeout=10)
