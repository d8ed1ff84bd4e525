"""The fleet's admin endpoints on a real orchestratord on loopback (ORCH-306, ORCH-410,
FLT-081).

The plan test serves orchestratord's app with uvicorn on loopback in the test's own event loop
and runs a policy whose plan() probes that loop: on its first clock read it asks the loop to
run a callback and notes whether it ran within PATIENCE_S. On the loop's own thread it cannot
run until plan() returns, so the note is False; off the loop it runs at once. The assertions
are on those notes, never on durations (as tests/worker/test_off_loop.py does for the worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from orchestratord.app import create_app
from orchestratord.policy import PolicyEngine
from orchestratord.settings import Settings
from tests.orchestratord.cluster import AT, orchestratord, wait_for
from tests.support import free_port

pytestmark = pytest.mark.e2e

ADMIN = {"authorization": f"Bearer {AT}"}


def audit_entries(url: str, action: str) -> list[dict[str, Any]]:
    r = httpx.get(url + "/v2/admin/audit", params={"action": action}, headers=ADMIN)
    assert r.status_code == 200, r.text
    return list(r.json()["entries"])


def test_orch_410_a_pool_report_is_audited_with_before_and_after(tmp_path: Path) -> None:
    """ORCH-410, ORCH-306: each PUT /v2/fleet/pools/{pool} leaves a `fleet.pool` entry naming
    the admin credential and the pool, with the report in use before (none at first) and the
    new one; a refused report records nothing."""
    first = {"ram_total_bytes": 8 << 30, "ram_free_bytes": 6 << 30,
             "models": {"m": {"size_bytes": 1 << 20}}}  # fmt: skip
    second = {"ram_total_bytes": 8 << 30, "ram_free_bytes": 2 << 30, "vram_total_bytes": 4 << 30,
              "vram_free_bytes": 1 << 30, "models": {}}  # fmt: skip
    with orchestratord(tmp_path) as orch:
        url = orch.url + "/v2/fleet/pools/p1"
        assert httpx.put(url, json=first, headers=ADMIN).status_code == 204
        assert httpx.put(url, json=second, headers=ADMIN).status_code == 204
        bad = httpx.put(url, json={"ram_free_bytes": -1}, headers=ADMIN)
        assert bad.status_code == 400
        # The trail is written in the background: wait for both entries.
        got = wait_for(
            lambda: (e := audit_entries(orch.url, "fleet.pool")) and len(e) >= 2 and e,
            what="two fleet.pool audit entries",
        )
    assert [(e["who"], e["action"], e["target"]) for e in got] == [
        ("admin", "fleet.pool", "p1"),
        ("admin", "fleet.pool", "p1"),
    ]
    newest, oldest = got
    assert oldest["before"] is None
    assert oldest["after"]["ram_free_bytes"] == 6 << 30
    assert oldest["after"]["models"]["m"]["size_bytes"] == 1 << 20
    assert newest["before"] == oldest["after"]
    assert (newest["after"]["ram_free_bytes"], newest["after"]["vram_free_bytes"]) == (
        2 << 30,
        1 << 30,
    )
    assert newest["after"]["models"] == {}


PATIENCE_S = 5.0  # a bound for a failing run, not a measured time
# The dry run at load asks about "dry-run-model"; the fleet's own model gets the probe.
PROBED_PLAN = """
def plan(fleet, cluster):
    return {"replicas": {k: m["min_replicas"] for k, m in fleet["models"].items()},
            "reasons": {k: "probed" for k in fleet["models"]}}
"""
FLEET: dict[str, Any] = {
    "models": {"m": {"source": "catalog:m", "pools": ["p1"], "slots": 1}},
    "scaling": {"target_ttft_ms": 1000, "cooldown_s": 30},
}


class LoopProbe:
    """An engine clock that, once armed, probes the event loop at its first read on a thread
    (where plan() starts) and notes whether the loop ran a callback meanwhile."""

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.armed = False
        self.notes: list[bool] = []

    def __call__(self) -> float:
        if self.armed and self.loop is not None:
            self.armed = False
            ran = threading.Event()
            self.loop.call_soon_threadsafe(ran.set)
            self.notes.append(ran.wait(PATIENCE_S))
        return time.perf_counter()


@contextlib.asynccontextmanager
async def serve(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """orchestratord's app on loopback in this event loop; the client and the app."""
    port = free_port()
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    try:
        headers = {"authorization": f"Bearer {AT}"}
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
            async with asyncio.timeout(30):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await client.get("/health")).status_code == 200:
                            break
                    await asyncio.sleep(0.02)
            yield client, app
    finally:
        server.should_exit = True
        await task


@pytest.mark.anyio
async def test_flt_081_a_policys_plan_runs_off_the_event_loop(tmp_path: Path) -> None:
    """FLT-081: GET /v2/fleet/plan and an action's lease ask a policy's own plan() on the
    policy's thread, so the loop keeps serving while it decides (on the loop, as before, the
    loop could not run a callback until plan() returned); the plan is the policy's."""
    probe = LoopProbe()
    settings = Settings(state_dir=tmp_path / "state", admin_token=AT)
    async with serve(settings) as (client, app):
        holder = app.state.service.policy_calls.holder
        holder.replace(PolicyEngine.from_source(PROBED_PLAN, budget_ms=60_000, clock=probe))
        assert (await client.put("/v2/fleet", json=FLEET)).status_code == 200
        probe.loop = asyncio.get_running_loop()
        probe.armed = True
        r = await client.get("/v2/fleet/plan")
        assert r.status_code == 200, r.text
        assert (r.json()["decided_by"], r.json()["models"][0]["reason"]) == ("policy", "probed")
        probe.armed = True
        lease = {"holder": "a", "ttl_s": 60}
        r = await client.post("/v2/fleet/actions/ensure_model:m@p1/lease", json=lease)
        assert r.status_code == 200, r.text
        assert (await client.get("/health")).status_code == 200
    assert probe.notes == [True, True]
