"""Real orchestratord and llorch-workerd processes on loopback, driven only through their HTTP
APIs, for the soak and load benchmarks (not a benchmark itself: `make bench` skips `_*.py`).

The scripts are black-box on purpose: they must measure today's orchestratord and a reworked
one alike, so nothing here imports orchestratord or worker code. Flags that differ between
builds (`--admin-token`, `--retain-tasks`) are found in each
program's `--help`, once per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from httpx_sse import EventSource

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support import free_port, wait_http_ready  # noqa: E402

CLUSTER_TOKEN = "bench-cluster-token"
ADMIN_TOKEN = "bench-admin-token"
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})


def raise_fd_limit(want: int) -> int:
    """Raise RLIMIT_NOFILE (children inherit it) as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@functools.cache
def help_text(module: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"},
    )
    return out.stdout + out.stderr


def has_flag(module: str, flag: str) -> bool:
    text = help_text(module)
    return any(
        text[i + len(flag) : i + len(flag) + 1] in ("", " ", "\n", "=", ",", "\t")
        for i in _find_all(text, flag)
    )


def _find_all(text: str, needle: str) -> Iterator[int]:
    i = text.find(needle)
    while i >= 0:
        yield i
        i = text.find(needle, i + 1)


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Daemon:
    """One real child process (`python -m <args>`) serving HTTP on a fixed loopback port; it
    can be killed and started again on the same port, as a supervisor would."""

    args: list[str]
    port: int
    log: Path
    health: str = "/health"
    ready: str | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        self.starts += 1
        try:
            wait_http_ready(self.url + self.health, self.proc, timeout=timeout, ready=self.ready)
        except Exception as e:
            tail = self.log.read_text(errors="replace")[-2000:]
            self.stop()
            raise RuntimeError(f"{self.args[0]} did not start: {e}\n--- log ---\n{tail}") from e

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: no cleanup, no deregistration, as a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


@dataclass
class Fleet:
    """orchestratord plus workers; tenants' keys, and the headers each endpoint needs."""

    tmp: Path
    model: Path
    keys: dict[str, str] = field(default_factory=dict)  # tenant -> key
    orch: Daemon | None = None
    workers: list[Daemon] = field(default_factory=list)
    _fleet_headers: dict[str, str] | None = None

    def start_orchestratord(self, *extra: str, port: int | None = None) -> Daemon:
        args = [
            "orchestratord",
            "--port",
            str(port or free_port()),
            "--state-dir",
            str(self.tmp / "state"),
            "--cluster-token",
            CLUSTER_TOKEN,
            "--log-level",
            "warning",
            *extra,
        ]
        if has_flag("orchestratord", "--admin-token"):
            args += ["--admin-token", ADMIN_TOKEN]
        for tenant, key in self.keys.items():
            args += ["--api-key", f"{tenant}:{key}"]
        self.orch = Daemon(args, int(args[2]), self.tmp / "orchestratord.log")
        self.orch.start()
        return self.orch

    def add_worker(self, worker_id: str, slots: int, *extra: str, register: bool = True) -> Daemon:
        port = free_port()
        args = [
            "worker",
            "--model",
            str(self.model),
            "--port",
            str(port),
            "--slots",
            str(slots),
            "--cluster-token",
            CLUSTER_TOKEN,
            "--worker-id",
            worker_id,
            *extra,
        ]
        if register:
            assert self.orch is not None
            args += ["--orchestrator-url", self.orch.url]
        w = Daemon(args, port, self.tmp / f"worker-{worker_id}.log", ready="ready")
        w.start()
        self.workers.append(w)
        return w

    def stop_all(self) -> None:
        for d in [*self.workers, *([self.orch] if self.orch else [])]:
            d.stop()

    def client_headers(self, tenant: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[tenant]}"}

    @property
    def worker_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {CLUSTER_TOKEN}"}

    async def fleet_view(self, client: httpx.AsyncClient) -> list[dict[str, Any]]:
        """orchestratord's GET /v2/workers, with whichever credential this build wants there
        (the cluster token today, an admin token in a build that has one)."""
        assert self.orch is not None
        tries = [self._fleet_headers] if self._fleet_headers else []
        tries += [
            {"authorization": f"Bearer {ADMIN_TOKEN}"},
            {"authorization": f"Bearer {CLUSTER_TOKEN}"},
        ]
        last: httpx.Response | None = None
        for headers in tries:
            assert headers is not None
            last = await client.get(self.orch.url + "/v2/workers", headers=headers)
            if last.status_code == 200:
                self._fleet_headers = headers
                workers: list[dict[str, Any]] = last.json()["workers"]
                return workers
        assert last is not None
        raise RuntimeError(f"GET /v2/workers: {last.status_code} {last.text[:200]}")

    async def wait_registered(
        self, client: httpx.AsyncClient, worker_ids: Sequence[str], within_s: float = 60.0
    ) -> None:
        deadline = time.monotonic() + within_s
        while True:
            ready = {w["id"] for w in await self.fleet_view(client) if w["state"] == "ready"}
            if set(worker_ids) <= ready:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"workers {sorted(set(worker_ids) - ready)} not ready")
            await asyncio.sleep(0.1)

    async def wait_idle(self, client: httpx.AsyncClient, within_s: float = 30.0) -> None:
        """Until orchestratord counts no busy slot on any worker. Work sent to a worker
        directly is known to orchestratord only through heartbeats, which it trusts: a
        relayed batch right after a direct one would otherwise wait for the next heartbeat."""
        deadline = time.monotonic() + within_s
        while any(w["slots_busy"] for w in await self.fleet_view(client)):
            if time.monotonic() > deadline:
                raise TimeoutError("orchestratord still counts busy slots")
            await asyncio.sleep(0.05)


@contextlib.contextmanager
def fleet(tmp: Path, model: Path, keys: dict[str, str]) -> Iterator[Fleet]:
    f = Fleet(tmp, model, dict(keys))
    try:
        yield f
    finally:
        f.stop_all()


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data) of an event stream; comments and keep-alives skipped."""
    async for ev in EventSource(response).aiter_sse():
        if ev.data:
            yield ev.event, json.loads(ev.data)


async def lean_sse_ttft(
    url: str, body: dict[str, Any], headers: dict[str, str]
) -> tuple[float, int]:
    """One POST on its own connection, read with asyncio streams and split into SSE events by
    hand: (seconds to the first `token` event, `tokens_out` of `end`); raises on an error
    event or a status other than 200. For latency figures.

    httpx with httpx-sse spends ~1.5 ms of CPU to send a request and more to take in each
    response's head and first events; a benchmark that opens 16 streams at once from one
    process then measures its own client, and a server that answers sooner (orchestratord's
    `queued` event comes at once) slows the sending of the remaining requests. This costs a
    few tens of microseconds per request and per event, the same for every server.
    """
    start = time.perf_counter()
    ttft: float | None = None
    async with contextlib.aclosing(lean_sse_frames(url, body, headers)) as frames:
        async for now, frame in frames:
            if ttft is None and b"event: token" in frame:
                ttft = now - start
            elif b"event: end" in frame:
                data = json.loads(frame.split(b"data: ", 1)[1])
                return (ttft if ttft is not None else float("nan")), data["tokens_out"]
    raise AssertionError("unreachable: lean_sse_frames ends with an end event")


async def lean_sse_frames(
    url: str, body: dict[str, Any], headers: dict[str, str]
) -> AsyncGenerator[tuple[float, bytes], None]:
    """The hand-read stream under `lean_sse_ttft`: (arrival time by perf_counter, frame) of
    each SSE frame, the `end` frame last; raises on an error event, a status other than 200,
    or a stream that ends without `end`."""
    parts = urlsplit(url)
    payload = json.dumps(body).encode()
    head = [
        f"POST {parts.path} HTTP/1.1",
        f"Host: {parts.netloc}",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Accept: text/event-stream",
        "Connection: close",
        *(f"{k}: {v}" for k, v in headers.items()),
    ]
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        status = (await reader.readuntil(b"\r\n\r\n")).split(b" ", 2)[1]
        if status != b"200":
            raise RuntimeError(f"{url}: {status.decode()} {(await reader.read(300))!r}")
        buf = b""
        while True:  # chunked: a size line, the data, CRLF; the last chunk has size 0
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                raise RuntimeError(f"{url}: the stream ended without an end event")
            buf += (await reader.readexactly(size + 2))[:-2]
            now = time.perf_counter()
            *frames, buf = buf.split(b"\n\n")
            for frame in frames:
                if b"event: error" in frame:
                    raise RuntimeError(f"{url}: error event {frame!r}")
                yield now, frame
                if b"event: end" in frame:
                    return
    finally:
        writer.close()


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of a non-empty sequence."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return round(s[k], 3)
