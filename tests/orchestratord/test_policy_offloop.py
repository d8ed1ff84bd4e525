"""A policy's own code runs off the event loop, a pass has a time budget, a breaker sets a
failing policy aside, and admit, schedule and plan come from one reload (specs/policy.md
POL-074, POL-075, POL-090..POL-094; specs/fleet.md FLT-010)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from orchestratord.domain.queue import QueueEntry, TaskQueue
from orchestratord.domain.registry import Registry, Worker
from orchestratord.domain.scheduler import apply, snapshot, task_view
from orchestratord.domain.tasks import parse_task_request
from orchestratord.domain.tenancy import Caller
from orchestratord.domain.views import ClusterView, TaskView
from orchestratord.fleet.plan_hook import PlanHook
from orchestratord.metrics import Metrics
from orchestratord.policy import PolicyEngine, PolicyError, PolicyHolder
from orchestratord.policy.fleet_plan import dry_run_input
from orchestratord.runtime.policy_calls import PolicyCalls
from orchestratord.runtime.service import TaskService
from orchestratord.settings import Settings
from shared.problem import AdmissionReject

ANON = Caller(None)

# The dry run passes task ids starting "dry-run"; real tasks get the slow or failing path.
SLOW_SCHEDULE = """
def schedule(task, workers, cluster):
    if not task["id"].startswith("dry-run"):
        n = 0
        for i in range(%d):
            n += i
    for w in workers:
        if w["state"] == "ready" and w["slots_busy"] < w["slots_total"]:
            return w["id"]
    return None
"""
FAILING_SCHEDULE = """
def schedule(task, workers, cluster):
    if task["id"].startswith("dry-run"):
        return None
    return 1 // 0
"""


class Heartbeat:
    """Counts event-loop turns: a task that wakes every millisecond."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0.001)


class Recorder:
    """An engine clock that notes the heartbeat's count each time the engine reads it: the
    engine reads its clock when a call starts, in the budget check of a long call, and when it
    ends, all on the thread the call runs on."""

    def __init__(self, beat: Heartbeat) -> None:
        self.beat = beat
        self.seen: list[int] = []

    def __call__(self) -> float:
        self.seen.append(self.beat.ticks)
        return time.perf_counter()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as c:
        yield c


def service(
    tmp_path: Path, client: httpx.AsyncClient, engine: PolicyEngine, budget_ms: float = 50.0
) -> TaskService:
    s = Settings(
        state_dir=tmp_path,
        expect_models=("m",),
        policy_budget_ms=budget_ms,
        policy_pass_budget_ms=max(200.0, budget_ms),
    )
    return TaskService(s, policy=PolicyHolder(engine), metrics=Metrics(), client=client)


@pytest.mark.anyio
async def test_pol_090_the_loop_keeps_turning_during_a_long_schedule_call(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """POL-090, POL-091: while one long call of a policy's own schedule() runs, the event loop
    keeps turning (on the loop, as before, it could not turn once during the call)."""
    beat = Heartbeat()
    clock = Recorder(beat)
    done = threading.Event()
    during: list[int] = []

    class Ended:
        def observe(self, fn: str, seconds: float) -> None:
            # Called after a call's last clock read: what the clock saw since the admit call
            # ended is what the one schedule call saw.
            if fn == "admit":
                clock.seen.clear()
            elif fn == "schedule" and not done.is_set():
                during.extend(clock.seen)
                done.set()

        def fallback(self, fn: str, reason: str) -> None:
            pass

    engine = PolicyEngine.from_source(
        SLOW_SCHEDULE % 2_000_000, budget_ms=60_000, clock=clock, observer=Ended()
    )
    svc = service(tmp_path, client, engine, budget_ms=60_000)
    heart = asyncio.create_task(beat.run())
    svc.start()
    try:
        svc.register_worker(Worker("w1", "http://127.0.0.1:9", "m", slots_total=1))
        await svc.submit(parse_task_request({"model": "m", "prompt": "hi"}, caller=ANON))
        assert await asyncio.to_thread(done.wait, 60)
        # The schedule call's own clock reads: its first and its last saw different counts.
        assert len(during) >= 3
        assert during[-1] > during[0]
    finally:
        heart.cancel()
        await svc.stop()


@pytest.mark.anyio
@pytest.mark.parametrize("own_schedule", [False, True])
async def test_pol_090_the_default_policy_schedules_inline_a_policy_file_off_the_loop(
    tmp_path: Path, client: httpx.AsyncClient, own_schedule: bool
) -> None:
    """POL-090: the default policy's schedule() is the built-in one and answers on the loop
    (it paid a thread hop per scheduling pass); a policy file's own schedule() runs on the
    policy's thread."""
    threads: list[str] = []  # where each schedule() call ran

    class Where:
        def observe(self, fn: str, seconds: float) -> None:
            if fn == "schedule":
                threads.append(threading.current_thread().name)

        def fallback(self, fn: str, reason: str) -> None:
            pass

    if own_schedule:
        engine = PolicyEngine.from_source(SLOW_SCHEDULE % 1, observer=Where())
    else:
        engine = PolicyEngine.from_file(None, observer=Where())
    threads.clear()  # the dry run's calls, at load
    svc = service(tmp_path, client, engine)
    svc.start()
    try:
        svc.register_worker(Worker("w1", "http://127.0.0.1:9", "m", slots_total=1))
        await svc.submit(parse_task_request({"model": "m", "prompt": "hi"}, caller=ANON))
        for _ in range(500):
            if threads:
                break
            await asyncio.sleep(0.01)
        assert threads
        on_loop = threads[0] == threading.current_thread().name
        assert on_loop is not own_schedule
    finally:
        await svc.stop()


def idle_cluster(queued: int) -> ClusterView:
    return {
        "queue_depth": {"interactive": queued, "batch": 0},
        "now_ms": 0,
        "workers": {},
        "running_by_tenant": {},
    }


def queued(n: int, slots: int) -> tuple[TaskQueue, Registry, dict[str, TaskView]]:
    queue = TaskQueue(100)
    registry = Registry(10_000, 60_000)
    registry.register(Worker("w1", "http://127.0.0.1:9", "m", slots_total=slots), 0)
    views: dict[str, TaskView] = {}
    for i in range(n):
        req = parse_task_request({"model": "m", "prompt": f"p{i}"}, caller=ANON)
        queue.push(QueueEntry(f"t{i}", "m", "interactive", 0, None))
        views[f"t{i}"] = task_view(f"t{i}", req, 0)
    return queue, registry, views


@pytest.mark.anyio
async def test_pol_092_the_breaker_trips_after_repeated_failures_and_counts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """POL-092: after --policy-breaker-failures failed calls in a row the pass stops asking
    the policy, the built-in schedule stands in (no more fallbacks are counted), and
    llorch_orchestrator_policy_breaker_trips_total counts the trip, logged once."""
    metrics = Metrics()
    fallbacks: list[str] = []

    class Seen:
        def observe(self, fn: str, seconds: float) -> None:
            pass

        def fallback(self, fn: str, reason: str) -> None:
            fallbacks.append(reason)

    holder = PolicyHolder(PolicyEngine.from_source(FAILING_SCHEDULE, observer=Seen()))
    settings = Settings(
        state_dir=tmp_path, policy_breaker_failures=3, policy_breaker_cooldown_s=3600
    )
    calls = PolicyCalls(holder, settings, metrics)
    queue, registry, views = queued(6, 6)
    try:
        engine, own = calls.engine("schedule")
        assert own
        parts = snapshot(queue, registry, 0)
        cluster = idle_cluster(6)
        with caplog.at_level("WARNING", logger="llorch.policy"):
            assignments, cut = await calls.schedule_pass(engine, parts, views, cluster)
        # Each failed call fell back to the built-in, which placed its task; then it tripped.
        assert fallbacks == ["error"] * 3
        assert (len(assignments), cut) == (3, True)
        assert len(apply(assignments, queue, registry, 0)) == 3
        assert calls.engine("schedule") == (engine, False)  # the built-in stands in
        trips = metrics.registry.get_sample_value("llorch_orchestrator_policy_breaker_trips_total")
        assert trips == 1.0
        assert b"llorch_orchestrator_policy_breaker_open 1.0" in metrics.render({}, {})
        assert [r for r in caplog.records if "stands in" in r.getMessage()] != []
        assert len([r for r in caplog.records if "stands in" in r.getMessage()]) == 1
    finally:
        calls.close()


@pytest.mark.anyio
async def test_pol_092_a_reload_gives_the_new_policy_a_clean_record(tmp_path: Path) -> None:
    """POL-092: the breaker is about one policy: a reload closes it."""
    holder = PolicyHolder(PolicyEngine.from_source(FAILING_SCHEDULE))
    settings = Settings(state_dir=tmp_path, policy_breaker_failures=1)
    calls = PolicyCalls(holder, settings, Metrics())
    queue, registry, views = queued(2, 2)
    try:
        engine, _ = calls.engine("schedule")
        cluster = idle_cluster(2)
        await calls.schedule_pass(engine, snapshot(queue, registry, 0), views, cluster)
        assert calls.engine("schedule")[1] is False
        holder.reload_source(SLOW_SCHEDULE % 1)
        assert calls.engine("schedule")[1] is True
    finally:
        calls.close()


@pytest.mark.anyio
async def test_pol_094_a_pass_stops_asking_the_policy_when_its_budget_is_spent(
    tmp_path: Path,
) -> None:
    """POL-094: a pass asks the policy while its --policy-pass-budget-ms lasts; what it did not
    decide stays queued for the next pass, and the cut pass is recorded by the breaker."""
    engine = PolicyEngine.from_source(SLOW_SCHEDULE % 200_000, budget_ms=10_000)
    settings = Settings(state_dir=tmp_path, policy_budget_ms=1, policy_pass_budget_ms=1)
    calls = PolicyCalls(PolicyHolder(engine), settings, Metrics())
    queue, registry, views = queued(4, 4)
    try:
        cluster = idle_cluster(4)
        parts = snapshot(queue, registry, 0)
        assignments, cut = await calls.schedule_pass(engine, parts, views, cluster)
        assert cut and 1 <= len(assignments) < 4
        apply(assignments, queue, registry, 0)
        assert len(queue) == 4 - len(assignments)
    finally:
        calls.close()


ADMIT_TWO = """
def admit(task, cluster):
    if cluster["queue_depth"]["interactive"] >= 2:
        return {"accept": False, "reason": "two wait already", "retry_after_ms": 5}
    return {"accept": True}
"""


@pytest.mark.anyio
async def test_pol_093_a_burst_of_submissions_is_admitted_one_at_a_time(
    tmp_path: Path, client: httpx.AsyncClient
) -> None:
    """POL-093: the policy's admit runs off the loop, yet each submission of a burst is
    decided on the queue the one before left: a cap of two queued tasks admits exactly two."""
    svc = service(tmp_path, client, PolicyEngine.from_source(ADMIT_TWO))
    try:
        reqs = [
            parse_task_request({"model": "m", "prompt": f"p{i}"}, caller=ANON) for i in range(6)
        ]
        results = await asyncio.gather(*(svc.submit(r) for r in reqs), return_exceptions=True)
        assert sum(not isinstance(r, BaseException) for r in results) == 2
        assert all(isinstance(r, AdmissionReject) for r in results[2:])
    finally:
        await svc.stop()


PLAN_MAX = """
def admit(task, cluster):
    return {"accept": False, "reason": "version %s"}

def plan(fleet, cluster):
    return {"replicas": {k: m["max_replicas"] for k, m in fleet["models"].items()},
            "reasons": {k: "version %s" for k in fleet["models"]}}
"""


def test_pol_074_admit_and_plan_change_together_on_reload(tmp_path: Path) -> None:
    """POL-074, FLT-010: admit, schedule and plan are one bundle from one read of the file;
    the fleet's plan hook follows the holder, so one reload changes both."""
    path = tmp_path / "policy.star"
    path.write_text(PLAN_MAX % ("1", "1"))
    holder = PolicyHolder(PolicyEngine.from_file(path))
    hook = PlanHook.following(holder)
    fleet, cluster = dry_run_input()
    task = task_view("t", parse_task_request({"model": "m", "prompt": "p"}, caller=ANON), 0)
    cv = idle_cluster(0)
    assert holder.engine.admit(task, cv).reason == "version 1"
    assert hook.plan(fleet, cluster).reasons["dry-run-model"] == "version 1"
    path.write_text(PLAN_MAX % ("2", "2"))
    holder.reload()
    assert holder.engine.admit(task, cv).reason == "version 2"
    decision = hook.plan(fleet, cluster)
    assert (decision.source, decision.reasons["dry-run-model"]) == ("policy", "version 2")
    holder.reload_source("")  # no plan(): the built-in one, with the built-in admit
    assert hook.plan(fleet, cluster).source == "builtin"
    assert holder.engine.admit(task, cv).accept


SLOW_LOAD = """
_N = len([i for i in range(3000000)])

def admit(task, cluster):
    return {"accept": False, "reason": "slow"}
"""


def test_pol_075_concurrent_reloads_do_not_interleave() -> None:
    """POL-075: a reload that starts while another compiles waits for it, so the one that
    started last is the one that stays (unserialized, the slow earlier one would win)."""
    compiling = threading.Event()

    def clock() -> float:  # the engines' clock: read while a reload compiles, on its thread
        if threading.current_thread().name == "slow-reload":
            compiling.set()
        return time.perf_counter()

    holder = PolicyHolder(PolicyEngine.from_source("", clock=clock))
    slow = threading.Thread(
        target=holder.reload_source, args=(SLOW_LOAD,), kwargs={"name": "A"}, name="slow-reload"
    )
    slow.start()
    assert compiling.wait(30)
    holder.reload_source("def admit(task, cluster):\n    return {'accept': True}\n", name="B")
    slow.join()
    assert holder.engine.name == "B"


def test_flt_010_plan_is_checked_by_the_engine_like_admit_and_schedule() -> None:
    """FLT-010, FLT-011: plan() is compiled, checked and budgeted by the policy engine itself:
    its signature is checked like admit's, and a plan() that overruns falls back like them."""
    with pytest.raises(PolicyError, match=r"plan must take 2 positional parameters"):
        PolicyEngine.from_source("def plan(fleet):\n    return {}\n")
    seen: list[tuple[str, str]] = []

    class Seen:
        def observe(self, fn: str, seconds: float) -> None:
            pass

        def fallback(self, fn: str, reason: str) -> None:
            seen.append((fn, reason))

    src = (
        "def plan(fleet, cluster):\n"
        '    if "dry-run-model" not in fleet["models"]:\n'
        "        x = [i for i in range(10000000)]\n"
        '    return {"replicas": {k: m["min_replicas"] for k, m in fleet["models"].items()}}\n'
    )
    engine = PolicyEngine.from_source(src, budget_ms=5, observer=Seen())
    fleet, cluster = dry_run_input()
    fleet["models"] = {"other": fleet["models"]["dry-run-model"]}
    cluster["models"] = {"other": cluster["models"]["dry-run-model"]}
    assert engine.plan(fleet, cluster).source == "builtin"
    assert PlanHook(lambda: engine).plan(fleet, cluster).source == "builtin"
    assert seen == [("plan", "timeout"), ("plan", "timeout")]
