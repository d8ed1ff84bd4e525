"""Each policy in examples/policies/ loads and does what its comment promises."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestratord.policy import AdmitDecision, PolicyEngine
from tests.orchestratord.test_policy import (
    RecordingObserver,
    make_cluster,
    make_task,
    make_worker,
)

EXAMPLES = Path(__file__).parents[2] / "examples" / "policies"


def load(name: str, observer: RecordingObserver) -> PolicyEngine:
    return PolicyEngine.from_file(EXAMPLES / name, observer=observer)


@pytest.fixture
def observer() -> RecordingObserver:
    return RecordingObserver()


def test_every_example_loads_without_warnings() -> None:
    names = sorted(p.name for p in EXAMPLES.glob("*.star"))
    assert {"shed_batch_under_load.star", "pin_model_to_pool.star", "tenant_share_cap.star"} <= set(
        names
    )
    for name in names:
        assert PolicyEngine.from_file(EXAMPLES / name).warnings == ()


def test_shed_batch_under_load(observer: RecordingObserver) -> None:
    """POL-010: shed_batch_under_load.star; without schedule() the built-in one places tasks."""
    engine = load("shed_batch_under_load.star", observer)
    calm = make_cluster(queue_depth={"interactive": 3, "batch": 40}, workers={"ready": 1})
    deep = make_cluster(queue_depth={"interactive": 4, "batch": 0}, workers={"ready": 2})
    all_busy = make_cluster(workers={"busy": 2, "draining": 1})
    batch, interactive = make_task(priority="batch"), make_task(priority="interactive")

    assert engine.admit(batch, calm) == AdmitDecision(accept=True)
    assert engine.admit(batch, deep) == AdmitDecision(
        accept=False,
        reason="4 interactive tasks are waiting; batch work is shed",
        retry_after_ms=5000,
    )
    assert engine.admit(batch, all_busy) == AdmitDecision(
        accept=False, reason="every worker is busy; batch work is shed", retry_after_ms=5000
    )
    assert engine.admit(interactive, deep).accept and engine.admit(interactive, all_busy).accept
    # No schedule() in the file: the built-in one places admitted tasks.
    workers = [make_worker("a", slots_busy=3), make_worker("b", slots_busy=1)]
    assert engine.schedule(batch, workers, calm) == "b"
    assert observer.fallbacks == []


def test_pin_model_to_pool(observer: RecordingObserver) -> None:
    engine = load("pin_model_to_pool.star", observer)
    pinned = make_task(model="qwen2.5-0.5b-q4")
    workers = [
        make_worker("elsewhere-idle", model="qwen2.5-0.5b-q4", pool="cloud", slots_busy=0),
        make_worker("home-busy", model="qwen2.5-0.5b-q4", pool="gpu-box-1", slots_busy=3),
        make_worker("home-other-model", model="llama", pool="gpu-box-1", slots_busy=0),
    ]
    assert engine.schedule(pinned, workers, make_cluster()) == "home-busy"

    home_full = [
        *workers[:1],
        make_worker(
            "home-busy", model="qwen2.5-0.5b-q4", pool="gpu-box-1", slots_busy=4, state="busy"
        ),
    ]
    assert engine.schedule(pinned, home_full, make_cluster()) is None  # waits, never elsewhere

    free = make_task(model="llama")
    anywhere = [
        make_worker("cloud-llama", model="llama", pool="cloud", slots_busy=2),
        make_worker("box-llama", model="llama", pool="gpu-box-1", slots_busy=1),
    ]
    assert engine.schedule(free, anywhere, make_cluster()) == "box-llama"
    assert engine.schedule(free, anywhere[:1], make_cluster()) == "cloud-llama"
    assert engine.admit(pinned, make_cluster()).accept
    assert observer.fallbacks == []


def test_tenant_share_cap(observer: RecordingObserver) -> None:
    engine = load("tenant_share_cap.star", observer)
    # 8 slots on the workers passed (not the draining one's): default cap 4, nightly-batch 2.
    workers = [
        make_worker("a", slots_total=4, slots_busy=3),
        make_worker("b", slots_total=4, slots_busy=2),
        make_worker("c", slots_total=4, slots_busy=0, state="draining"),
    ]
    cluster = make_cluster(running_by_tenant={"acme": 4, "small-co": 3, "nightly-batch": 2})

    assert engine.schedule(make_task(tenant="acme"), workers, cluster) is None
    assert engine.schedule(make_task(tenant="small-co"), workers, cluster) == "b"
    assert engine.schedule(make_task(tenant="nightly-batch"), workers, cluster) is None
    assert engine.schedule(make_task(tenant="newcomer"), workers, cluster) == "b"
    assert engine.schedule(make_task(tenant=None), workers, cluster) == "b"

    fewer = make_cluster(running_by_tenant={"acme": 3, "nightly-batch": 1})
    assert engine.schedule(make_task(tenant="acme"), workers, fewer) == "b"
    assert engine.schedule(make_task(tenant="nightly-batch"), workers, fewer) == "b"

    # A fleet too small for a fraction still lets each tenant run one task.
    one_slot = [make_worker("solo", slots_total=1)]
    assert engine.schedule(make_task(tenant="nightly-batch"), one_slot, make_cluster()) == "solo"
    assert observer.fallbacks == []
