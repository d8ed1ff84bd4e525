"""A reservation (a worker slot, a tenant's running count) is released exactly once, however
its task ends (ORCH-141)."""

from __future__ import annotations

import httpx
import pytest

from orchestratord.domain.registry import Registry, Worker
from orchestratord.domain.reservations import Ledger
from orchestratord.domain.tasks import parse_task_request
from orchestratord.domain.tenancy import Caller
from orchestratord.metrics import Metrics
from orchestratord.policy import PolicyEngine, PolicyHolder
from orchestratord.runtime.dispatch import dispatch_pass
from orchestratord.runtime.service import TaskService
from orchestratord.settings import Settings


def test_orch_141_a_reservation_releases_once() -> None:
    registry = Registry(100, 1000)
    registry.register(Worker("w1", "http://127.0.0.1:1", "m", slots_total=2), 0)
    ledger = Ledger(registry)
    with ledger.reserve("w1", "t1", "acme") as r:
        worker = registry.get("w1")
        assert worker is not None and worker.inflight == {"t1"}
        assert ledger.running_by_tenant == {"acme": 1}
    assert worker.inflight == set() and ledger.running_by_tenant == {}
    assert r.release() is False  # twice: nothing more is given back
    assert ledger.running_by_tenant == {}


@pytest.mark.anyio
async def test_orch_141_a_runner_cancelled_before_its_first_step_frees_its_slot(
    tmp_path: object,
) -> None:
    """The issue-8 leak: `cancel` cancelled a runner that `dispatch` had created but that had
    not started; its `finally` never ran, so the slot and the tenant's count stayed taken."""
    settings = Settings(state_dir=tmp_path)  # type: ignore[arg-type]
    async with httpx.AsyncClient() as client:
        service = TaskService(
            settings,
            policy=PolicyHolder(PolicyEngine.from_file(None)),
            metrics=Metrics(),
            client=client,
        )
        service.register_worker(Worker("w1", "http://127.0.0.1:1", "m", slots_total=1))
        req = parse_task_request({"model": "m", "prompt": "hi"}, caller=Caller("acme"))
        record = await service.submit(req)
        assert await dispatch_pass(service) == 1  # a runner is created, and has not run a step
        assert service.running_by_tenant == {"acme": 1}
        await service.cancel(record.id)
        worker = service.registry.get("w1")
        assert worker is not None and worker.inflight == set() and worker.slots_busy == 0
        assert service.running_by_tenant == {}
        got = await service.get(record.id)
        assert got.status == "cancelled" and got.stop_reason == "CANCELLED"
        await service.stop()
