"""The worker's side of the registry: register with orchestratord, heartbeat, deregister.

Started by the worker's lifespan when `--orchestrator-url` is set:

    task = asyncio.create_task(run_registration(Registration.from_settings(settings), snapshot))
    ...
    task.cancel(); await task          # deregisters on the way out

`snapshot()` returns the worker's own health dict (status, slots_total, slots_busy): heartbeats
carry the worker's real slot accounting, which orchestratord trusts over its own counters.
Registration waits until the worker's server answers `GET /health` with `ready`, so
orchestratord never learns of a worker it cannot reach yet. A heartbeat answered 404 (the
orchestrator forgot the worker) registers again; an unreachable orchestrator is retried at the
heartbeat interval and logged once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from shared.wire import Health, HeartbeatBody, RegisterBody
from worker.kvblocks import BlockLedger
from worker.settings import WorkerSettings

log = logging.getLogger("llorch.worker.registration")
Snapshot = Callable[[], Health]
# The worker's cache ledger once its model is loaded (WRK-171), else None.
Ledger = Callable[[], BlockLedger | None]


@dataclass(frozen=True)
class Registration:
    orchestrator_url: str
    worker_id: str
    url: str  # where orchestratord reaches this worker
    probe_url: str  # where this process checks its own server is listening
    model: str
    backend: str
    pool: str
    slots_total: int
    n_ctx: int
    token: str | None
    interval_s: float = 2.0

    @classmethod
    def from_settings(cls, s: WorkerSettings) -> Registration:
        if not s.orchestrator_url:
            raise ValueError("registration needs --orchestrator-url")
        host = "127.0.0.1" if s.host in ("0.0.0.0", "::", "") else s.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return cls(
            orchestrator_url=s.orchestrator_url.rstrip("/"),
            worker_id=s.worker_id,
            url=s.url,
            probe_url=f"http://{host}:{s.port}",
            model=s.model_name,
            backend=s.backend,
            pool=s.pool,
            slots_total=s.slots,
            n_ctx=s.n_ctx,
            token=s.token,
            interval_s=s.heartbeat_interval,
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def register_body(self) -> RegisterBody:
        return {
            "worker_id": self.worker_id,
            "url": self.url,
            "model": self.model,
            "backend": self.backend,
            "pool": self.pool,
            "slots_total": self.slots_total,
            "n_ctx": self.n_ctx,
        }


class RegistrationRefused(Exception):
    """orchestratord answered with an error that retrying will not fix by itself (401/403/400)."""


async def run_registration(
    reg: Registration,
    snapshot: Snapshot,
    *,
    client: httpx.AsyncClient | None = None,
    ledger: Ledger = lambda: None,
) -> None:
    """Register, heartbeat every `reg.interval_s`, and deregister when cancelled."""
    http = client or httpx.AsyncClient(timeout=httpx.Timeout(5.0), trust_env=False)
    registered = False
    try:
        await _wait_ready(http, reg)
        outage = False
        while True:
            try:
                if not registered:
                    await _register(http, reg)
                    registered = True
                    log.info("registered with %s as %s", reg.orchestrator_url, reg.worker_id)
                    if (kv := ledger()) is not None:
                        kv.resync()  # a new registration knows nothing of our cache (WRK-172)
                if not await _heartbeat(http, reg, snapshot(), ledger()):
                    registered = False
                    log.info("orchestratord does not know this worker; registering again")
                    continue
                if outage:
                    log.info("orchestratord at %s reachable again", reg.orchestrator_url)
                outage = False
            except httpx.HTTPError as e:
                if not outage:
                    log.warning("orchestratord at %s unreachable: %s", reg.orchestrator_url, e)
                outage = True
            except RegistrationRefused as e:
                if not outage:
                    log.error("%s", e)
                outage = True
            await asyncio.sleep(reg.interval_s)
    finally:
        if registered:
            # A cancelled task may still await in `finally`; the DELETE has its own timeout.
            await _deregister(http, reg)
        if client is None:
            await http.aclose()


async def _wait_ready(http: httpx.AsyncClient, reg: Registration) -> None:
    while True:
        try:
            r = await http.get(reg.probe_url + "/health", timeout=2.0)
            if r.status_code == 200 and r.json().get("status") == "ready":
                return
        except (httpx.HTTPError, ValueError):
            pass
        await asyncio.sleep(0.1)


async def _register(http: httpx.AsyncClient, reg: Registration) -> None:
    r = await http.post(
        reg.orchestrator_url + "/v2/workers/register",
        json=reg.register_body(),
        headers=reg.headers,
    )
    if r.status_code >= 400:
        raise RegistrationRefused(
            f"orchestratord refused the registration ({r.status_code}): {r.text[:300]}"
            + (" - check --cluster-token" if r.status_code in (401, 403) else "")
        )


async def _heartbeat(
    http: httpx.AsyncClient, reg: Registration, health: Health, kv: BlockLedger | None = None
) -> bool:
    """Send one heartbeat; False when orchestratord answers 404 (unknown worker)."""
    body: HeartbeatBody = {
        "state": health["status"],
        "slots_total": health["slots_total"],
        "slots_busy": health["slots_busy"],
        # WRK-103: orchestratord may prefer the worker holding a prefix.
        "prefix_cache": health["prefix_cache"],
        # WRK-111: orchestratord sends embeddings only where they work.
        "embeddings": health["embeddings"],
    }
    if kv is not None:
        body["kv_blocks"] = kv.report()  # WRK-171: orchestratord's cache index
    try:
        r = await http.post(
            f"{reg.orchestrator_url}/v2/workers/{reg.worker_id}/heartbeat",
            json=body,
            headers=reg.headers,
        )
    except BaseException:
        if kv is not None:  # the report may be lost: the next one says everything (WRK-172)
            kv.resync()
        raise
    if r.status_code >= 400 and kv is not None:
        kv.resync()
    if r.status_code == 404:
        return False
    if r.status_code >= 400:
        raise RegistrationRefused(f"orchestratord refused a heartbeat ({r.status_code})")
    if kv is not None and _asks_resync(r):
        kv.resync()
    return True


def _asks_resync(r: httpx.Response) -> bool:
    try:
        answer = r.json()
    except ValueError:
        return False
    return isinstance(answer, dict) and answer.get("kv_resync") is True


async def _deregister(http: httpx.AsyncClient, reg: Registration) -> None:
    with contextlib.suppress(httpx.HTTPError):
        await http.delete(
            f"{reg.orchestrator_url}/v2/workers/{reg.worker_id}",
            headers=reg.headers,
            timeout=2.0,
        )
        log.info("deregistered from %s", reg.orchestrator_url)
