"""A small synchronous SSE reader for tests: real HTTP, events in order."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_sse import EventSource


@dataclass
class Event:
    id: str
    event: str
    data: dict[str, Any]


def events(response: httpx.Response) -> Iterator[Event]:
    for sse in EventSource(response).iter_sse():
        if not sse.data:  # httpx-sse turns a keep-alive comment into an empty event; skip it
            continue
        yield Event(sse.id, sse.event, json.loads(sse.data))


def execute(url: str, token: str | None, body: dict[str, Any], timeout: float = 60) -> list[Event]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with httpx.stream("POST", url + "/execute", json=body, headers=headers, timeout=timeout) as r:
        assert r.status_code == 200, r.read()
        return list(events(r))


def text_of(evs: list[Event]) -> str:
    return "".join(e.data["t"] for e in evs if e.event == "token")


def wait_idle(url: str) -> dict[str, Any]:
    """The worker's /health once no slot is busy (a closed stream's job is cancelled
    asynchronously), or after 30 s, whatever it says then."""
    deadline = time.monotonic() + 30
    while True:
        health: dict[str, Any] = httpx.get(url + "/health").json()
        if health["slots_busy"] == 0 or time.monotonic() > deadline:
            return health
        time.sleep(0.05)
