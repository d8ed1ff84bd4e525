"""The Starlark policy engine: built-in choices, affinity, fallbacks, validation, sandbox."""

from __future__ import annotations

import logging
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from orchestratord.policy import (
    AdmitDecision,
    ClusterView,
    PolicyEngine,
    PolicyError,
    PolicyHolder,
    TaskView,
    WorkerView,
    builtin_source,
)


def make_task(**over: Any) -> TaskView:
    task: dict[str, Any] = {
        "id": "task-1",
        "model": "m",
        "priority": "interactive",
        "session_id": None,
        "max_tokens": 16,
        "prompt_tokens": 12,
        "wait_ms": 0,
        "prefix_hash": "ab12",
        "tenant": None,
        "constrained": False,
        "logprobs": False,
        "tools": 0,
        "n": 1,
        "tenant_limits": None,
        "tenant_usage": {},
        "failovers": 0,
    }
    task.update(over)
    return task  # type: ignore[return-value]


def make_worker(wid: str, **over: Any) -> WorkerView:
    worker: dict[str, Any] = {
        "id": wid,
        "pool": "pool-a",
        "model": "m",
        "backend": "cpu",
        "state": "ready",
        "slots_total": 4,
        "slots_busy": 0,
        "tokens_per_s": 20.0,
        "last_heartbeat_ms": 1_000,
        "recent_starts": 0,
        "cached_tokens": 0,
        "recent_sessions": [],
        "recent_prefixes": [],
    }
    worker.update(over)
    return worker  # type: ignore[return-value]


def make_cluster(**over: Any) -> ClusterView:
    cluster: dict[str, Any] = {
        "queue_depth": {"interactive": 0, "batch": 0},
        "now_ms": 2_000,
        "workers": {"ready": 2},
        "running_by_tenant": {},
    }
    cluster.update(over)
    return cluster  # type: ignore[return-value]


class RecordingObserver:
    def __init__(self) -> None:
        self.observed: list[tuple[str, float]] = []
        self.fallbacks: list[tuple[str, str]] = []

    def observe(self, fn: str, seconds: float) -> None:
        self.observed.append((fn, seconds))

    def fallback(self, fn: str, reason: str) -> None:
        self.fallbacks.append((fn, reason))


@pytest.fixture(scope="module")
def default() -> PolicyEngine:
    return PolicyEngine.from_file(None)


# -- the built-in policy -----------------------------------------------------------------------


def test_default_admits_every_task(default: PolicyEngine) -> None:
    """POL-041: the built-in admit accepts every task; POL-002: from_file(None) is the built-in."""
    busy = make_cluster(queue_depth={"interactive": 500, "batch": 900}, workers={"busy": 3})
    for priority in ("interactive", "batch"):
        assert default.admit(make_task(priority=priority), busy) == AdmitDecision(accept=True)


def test_default_picks_least_busy_worker_serving_the_model(default: PolicyEngine) -> None:
    """POL-042, POL-043: only eligible workers; the lowest busy share."""
    workers = [
        make_worker("other-model", model="x", slots_busy=0),
        make_worker("draining", state="draining", slots_busy=0),
        make_worker("stale", state="stale", slots_busy=0),
        make_worker("dead", state="dead", slots_busy=0),
        make_worker("full", state="busy", slots_busy=4),
        make_worker("half", slots_busy=2),
        make_worker("quarter", slots_busy=1),
        make_worker("three-of-eight", slots_total=8, slots_busy=3, tokens_per_s=90.0),
    ]
    assert default.schedule(make_task(), workers, make_cluster()) == "quarter"
    assert default.schedule(make_task(), workers[:6], make_cluster()) == "half"


def test_pol_122_equal_workers_share_sequential_tasks(default: PolicyEngine) -> None:
    """POL-122, POL-043: tasks one after another on idle workers (equal load, one faster) spread
    over all of them, by rendezvous hashing of the task id: each worker warms up, whatever the
    order the workers are listed in."""
    workers = [make_worker("slow", tokens_per_s=5.0), make_worker("fast", tokens_per_s=50.0)]
    picks = []
    for n in range(30):
        task = make_task(id=f"task-{n}")
        pick = default.schedule(task, workers, make_cluster())
        assert default.schedule(task, workers[::-1], make_cluster()) == pick
        picks.append(pick)
    assert min(Counter(picks).values()) >= 6  # 15 expected each


def test_pol_121_cached_tokens_win_against_load_up_to_the_formula(default: PolicyEngine) -> None:
    """POL-121: the cache score, cached_tokens - 128 * busy share: a worker holding most of the
    prompt wins while it is not too loaded; an overloaded one loses to an idle one, and the
    cache decides before the session (POL-045)."""
    cluster = make_cluster()
    task = make_task(prompt_tokens=1200, session_id="chat-1")
    idle = make_worker("idle", tokens_per_s=90.0, recent_sessions=["chat-1"])
    warm = make_worker("warm", slots_busy=3, cached_tokens=128)  # 128 - 96 > 0
    assert default.schedule(task, [idle, warm], cluster) == "warm"
    half = make_worker("warm", slots_busy=3, cached_tokens=64)  # 64 - 96 < 0
    assert default.schedule(task, [idle, half], cluster) == "idle"
    # A chat's turn of about 100 tokens outweighs one busy slot of two (64): its history stays.
    history = make_worker("history", slots_total=2, slots_busy=1, cached_tokens=390)
    shared = make_worker("shared", slots_total=2, cached_tokens=296)
    assert default.schedule(task, [shared, history], cluster) == "history"
    # Of two holding it, the one with more of it; a full worker is not eligible, however warm.
    warmer = make_worker("warmer", slots_busy=3, cached_tokens=1152)
    assert default.schedule(task, [idle, warm, warmer], cluster) == "warmer"
    full = make_worker("full", state="busy", slots_busy=4, cached_tokens=4096)
    waited = make_task(prompt_tokens=1200, session_id="chat-1", wait_ms=1000)
    assert default.schedule(waited, [idle, full], cluster) == "idle"


def test_pol_123_a_task_waits_a_while_for_its_full_warm_worker(default: PolicyEngine) -> None:
    """POL-123: a full worker holding 256 tokens more of the prompt than any worker with room
    keeps the task queued, for up to 1,000 ms of waiting; a smaller lead, a worker with room
    that holds as much, or a draining warm worker do not."""
    cluster = make_cluster()
    task = make_task(prompt_tokens=1200, session_id="chat-1", wait_ms=0)
    idle = make_worker("idle")
    full = make_worker("full", state="busy", slots_busy=4, cached_tokens=1024)
    assert default.schedule(task, [idle, full], cluster) is None
    assert default.schedule({**task, "wait_ms": 999}, [idle, full], cluster) is None
    assert default.schedule({**task, "wait_ms": 1000}, [idle, full], cluster) == "idle"
    # The lead is what counts: 256 more than the best worker with room waits, 255 does not.
    some = make_worker("some", cached_tokens=768)
    assert default.schedule(task, [some, full], cluster) is None
    more = make_worker("some", cached_tokens=769)
    assert default.schedule(task, [more, full], cluster) == "some"
    # Only a usable worker of the task's model is waited for; n counts as room (POL-095).
    gone = make_worker("full", state="draining", slots_busy=4, cached_tokens=4096)
    assert default.schedule(task, [idle, gone], cluster) == "idle"
    other = make_worker("full", model="other", slots_busy=4, cached_tokens=4096)
    assert default.schedule(task, [idle, other], cluster) == "idle"
    three = make_worker("three", slots_busy=2, cached_tokens=1024)  # 2 free of 4
    assert default.schedule({**task, "n": 3}, [idle, three], cluster) is None
    assert default.schedule(task, [idle, three], cluster) == "three"


def test_pol_124_a_worker_behind_on_starts_takes_new_conversations(
    default: PolicyEngine,
) -> None:
    """POL-124: a worker that started less than 0.6 of an even share of the model's recent
    tasks takes a new conversation (no worker holds 384 tokens of it: a shared system prompt
    at most); a task whose history some worker holds stays with the cache score, and a worker
    at its share, full, or of another model is not chosen this way; below 5 starts a worker
    nobody is behind."""
    cluster = make_cluster()
    task = make_task(prompt_tokens=400)

    def pick(*workers: WorkerView, wait_ms: int = 0) -> str:
        return default.schedule({**task, "wait_ms": wait_ms}, list(workers), cluster) or ""

    # 30 starts over three workers: 10 is an even share; 5 < 0.6 * 10, 6 is not.
    holder = make_worker("holder", recent_starts=17, cached_tokens=296)
    peer = make_worker("peer", recent_starts=8, cached_tokens=296)
    cold = make_worker("cold", recent_starts=5)
    assert pick(holder, peer, cold) == "cold"
    at_share = make_worker("cold", recent_starts=6)
    holder_at = make_worker("holder", recent_starts=16, cached_tokens=296)
    assert pick(holder_at, peer, at_share) in ("holder", "peer")
    # A new conversation is one no worker holds 384 tokens of: 383 is, 384 is not, and a full
    # worker holding its history counts too.
    assert pick(make_worker("holder", recent_starts=17, cached_tokens=383), peer, cold) == "cold"
    assert pick(make_worker("holder", recent_starts=17, cached_tokens=384), peer, cold) == "holder"
    busy_history = make_worker("h", state="busy", slots_busy=4, recent_starts=0, cached_tokens=390)
    assert pick(holder, peer, cold, busy_history, wait_ms=1000) != "cold"
    # Of two behind, the one holding more; a full worker counts towards the total but is not
    # chosen; another model's worker is neither counted nor chosen.
    warm_behind = make_worker("warm-behind", recent_starts=2, cached_tokens=200)
    assert pick(holder, peer, cold, warm_behind) == "warm-behind"
    full = make_worker("cold", state="busy", slots_busy=4, recent_starts=5)
    assert pick(holder, peer, full) in ("holder", "peer")
    other = make_worker("other", model="other", recent_starts=0)
    assert pick(holder_at, peer, at_share, other) != "other"
    # Fewer than 5 starts a worker in the last minute: nobody is behind, the cache score
    # decides (a prefix one worker holds keeps drawing new conversations there).
    assert pick(make_worker("a", recent_starts=9, cached_tokens=296), make_worker("b")) == "a"
    assert pick(make_worker("a", recent_starts=10, cached_tokens=296), make_worker("b")) == "b"


def test_default_keeps_task_queued_without_an_eligible_worker(default: PolicyEngine) -> None:
    """POL-042: no eligible worker: None."""
    cluster = make_cluster()
    assert default.schedule(make_task(), [], cluster) is None
    full = [make_worker("a", slots_busy=4, state="busy"), make_worker("b", model="other")]
    assert default.schedule(make_task(), full, cluster) is None


def test_session_affinity_is_stable_and_spreads_sessions(default: PolicyEngine) -> None:
    """POL-044: rendezvous hashing: independent of order and process; only a removed worker's
    sessions move."""
    workers = [make_worker(f"w{i}") for i in range(4)]
    cluster = make_cluster()
    chosen = {}
    for n in range(200):
        task = make_task(session_id=f"session-{n}")
        first = default.schedule(task, workers, cluster)
        shuffled = random.Random(n).sample(workers, len(workers))
        assert default.schedule(task, shuffled, cluster) == first
        chosen[task["session_id"]] = first
    spread = Counter(chosen.values())
    assert set(spread) == {"w0", "w1", "w2", "w3"}
    assert min(spread.values()) >= 20  # 50 expected per worker

    # Removing a worker only moves the sessions that were on it.
    survivors = [w for w in workers if w["id"] != "w0"]
    for session, worker in chosen.items():
        again = default.schedule(make_task(session_id=session), survivors, cluster)
        assert again == worker if worker != "w0" else again in {"w1", "w2", "w3"}

    # A fresh engine (a restart, a reload) makes the same choices.
    fresh = PolicyEngine.from_file(None)
    for session, worker in list(chosen.items())[:20]:
        assert fresh.schedule(make_task(session_id=session), workers, cluster) == worker


def test_session_moves_while_its_worker_is_full_and_returns(default: PolicyEngine) -> None:
    """POL-044: a session leaves its full worker and returns when a slot frees."""
    workers = [make_worker(f"w{i}") for i in range(3)]
    task = make_task(session_id="chat-42")
    home = default.schedule(task, workers, make_cluster())
    full = [
        make_worker(w["id"], slots_busy=4, state="busy") if w["id"] == home else w for w in workers
    ]
    away = default.schedule(task, full, make_cluster())
    assert away is not None and away != home
    assert default.schedule(task, workers, make_cluster()) == home


def test_orch_235_default_prefers_the_worker_that_last_served_the_session(
    default: PolicyEngine,
) -> None:
    """ORCH-235: without cache-index answers, the eligible worker that last served the task's
    session wins over the least busy one; a full worker is still avoided; a shared prefix alone
    no longer pins tasks to one worker (the cache index finds prefixes, POL-121). (POL-045)"""
    cluster = make_cluster()
    task = make_task(prefix_hash="p" * 16, session_id="chat-7")
    idle = make_worker("idle", tokens_per_s=90.0)
    session = make_worker("session", slots_busy=3, recent_sessions=["chat-7"])
    assert default.schedule(task, [idle, session], cluster) == "session"
    full = make_worker("full", state="busy", slots_busy=4, recent_sessions=["chat-7"])
    assert default.schedule(task, [idle, full], cluster) == "idle"
    warm = make_worker("warm", slots_busy=2, recent_prefixes=["p" * 16])
    assert default.schedule(make_task(prefix_hash="p" * 16), [idle, warm], cluster) == "idle"


def test_builtin_source_is_shipped_with_the_package() -> None:
    """POL-040: the built-in policy is default.star in the package; builtin_source() returns it."""
    text = builtin_source()
    assert "def admit(task, cluster)" in text and "def schedule(task, workers, cluster)" in text
    shipped = Path(__file__).parents[2] / "orchestratord" / "policies" / "default.star"
    assert PolicyEngine.from_file(shipped).defines == {"admit", "schedule"}


# -- fallbacks ---------------------------------------------------------------------------------

FAILING = """
def admit(task, cluster):
    if task["id"].startswith("boom"):
        fail("admit exploded")
    if task["id"].startswith("slow"):
        return {"accept": len([x for x in range(1000000000)]) > 0}
    if task["id"].startswith("bad"):
        return "yes"
    return {"accept": False, "reason": "custom", "retry_after_ms": 250}

def schedule(task, workers, cluster):
    if task["id"].startswith("boom"):
        fail("schedule exploded on " + task["id"])
    if task["id"].startswith("slow"):
        return "w%d" % len([x for x in range(1000000000)])
    if task["id"].startswith("bad-type"):
        return 42
    if task["id"].startswith("bad-id"):
        return "no-such-worker"
    if task["id"].startswith("full"):
        return "full"
    if task["id"].startswith("function"):
        return lambda: "idle"
    return None
"""


@pytest.fixture
def observer() -> RecordingObserver:
    return RecordingObserver()


@pytest.fixture
def failing(observer: RecordingObserver) -> PolicyEngine:
    return PolicyEngine.from_source(FAILING, name="failing.star", budget_ms=20, observer=observer)


WORKERS = [make_worker("full", state="busy", slots_busy=4), make_worker("idle")]


def test_policy_decisions_are_used_when_they_are_valid(
    failing: PolicyEngine, observer: RecordingObserver
) -> None:
    """POL-030: a valid admit dict is taken as is; POL-004: observe once per call."""
    decision = failing.admit(make_task(id="ok"), make_cluster())
    assert decision == AdmitDecision(accept=False, reason="custom", retry_after_ms=250)
    assert failing.schedule(make_task(id="ok"), WORKERS, make_cluster()) is None
    assert observer.fallbacks == []
    assert [fn for fn, _ in observer.observed] == ["admit", "schedule"]
    assert all(seconds > 0 for _, seconds in observer.observed)


@pytest.mark.parametrize(
    ("task_id", "reason"),
    [
        ("boom-1", "error"),
        ("slow-1", "timeout"),
        ("bad-type", "bad_return"),
        ("bad-id", "bad_return"),
        ("full", "bad_return"),
        ("function", "error"),
    ],
)
def test_schedule_falls_back_to_builtin(
    failing: PolicyEngine, observer: RecordingObserver, task_id: str, reason: str
) -> None:
    """POL-051, POL-032: an error, overrun or ineligible id is answered by the built-in and
    reported."""
    assert failing.schedule(make_task(id=task_id), WORKERS, make_cluster()) == "idle"
    assert observer.fallbacks == [("schedule", reason)]


@pytest.mark.parametrize(
    ("task_id", "reason"), [("boom-1", "error"), ("slow-1", "timeout"), ("bad-1", "bad_return")]
)
def test_admit_falls_back_to_builtin(
    failing: PolicyEngine, observer: RecordingObserver, task_id: str, reason: str
) -> None:
    """POL-051, POL-030: an error, overrun or bad value is answered by the built-in admit and
    reported."""
    assert failing.admit(make_task(id=task_id), make_cluster()) == AdmitDecision(accept=True)
    assert observer.fallbacks == [("admit", reason)]


class SteppingClock:
    """Each read advances by `step` seconds (0 until a test sets it)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.step = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_budget_and_latency_are_measured_by_the_injected_clock(
    observer: RecordingObserver,
) -> None:
    """POL-050, POL-003, POL-004: the budget and the observed duration come from the injected
    clock."""
    clock = SteppingClock()
    src = (
        "def schedule(task, workers, cluster):\n"
        "    steps = [i for i in range(5000)]\n"  # the budget is checked every ~1000 steps
        "    mine = [w['id'] for w in workers if w['id'] in ('idle', 'last')]\n"
        "    return mine[-1]\n"
        "def admit(task, cluster):\n"
        "    return {'accept': False}\n"
    )
    with pytest.raises(PolicyError, match="dry run of schedule"):  # mine[-1] of []
        PolicyEngine.from_source(src, clock=clock)
    src = src.replace("mine[-1]", "mine[-1] if mine else None")
    engine = PolicyEngine.from_source(src, budget_ms=10, observer=observer, clock=clock)
    workers = [make_worker("idle"), make_worker("last")]
    assert engine.schedule(make_task(), workers, make_cluster()) == "last"
    assert observer.observed == [("schedule", 0.0)]

    clock.step = 3600.0  # an hour per read: every check of the budget finds it spent
    assert engine.schedule(make_task(), workers, make_cluster()) == "idle"
    assert engine.admit(make_task(), make_cluster()) == AdmitDecision(accept=False)
    assert observer.fallbacks == [("schedule", "timeout")]
    assert observer.observed[1][0] == "schedule" and observer.observed[1][1] >= 3 * 3600


def test_bad_admit_values_are_rejected() -> None:
    """POL-030, POL-071: a bad admit value fails the dry run."""
    for value in [
        '{"accept": 1}',
        '{"accept": False, "retry_after_ms": -5}',
        '{"accept": False, "retry_after_ms": 1.5}',
        '{"accept": False, "reason": 3}',
    ]:
        src = f"def admit(task, cluster):\n    return {value}\n"
        with pytest.raises(PolicyError, match="dry run of admit"):
            PolicyEngine.from_source(src)


def test_fallback_is_logged_once_per_distinct_problem(
    failing: PolicyEngine, observer: RecordingObserver, caplog: pytest.LogCaptureFixture
) -> None:
    """ORCH-071: every fallback is counted, each (function, reason) logged once. (POL-054)"""
    caplog.set_level(logging.WARNING, logger="llorch.policy")
    for _ in range(5):
        failing.schedule(make_task(id="bad-type"), WORKERS, make_cluster())
    assert len(observer.fallbacks) == 5
    assert len(caplog.records) == 1
    assert "failing.star: schedule() must return a worker id or None, got 42" in caplog.text
    failing.schedule(make_task(id="slow-1"), WORKERS, make_cluster())
    failing.schedule(make_task(id="slow-2"), WORKERS, make_cluster())
    assert len(caplog.records) == 2
    assert "ran past its 20 ms budget" in caplog.records[1].getMessage()


def test_many_distinct_failures_do_not_flood_the_log(
    failing: PolicyEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """POL-054: after 64 distinct messages, further ones are suppressed, and that is logged."""
    caplog.set_level(logging.WARNING, logger="llorch.policy")
    for n in range(200):  # the task id is in each error message: 200 distinct messages
        assert failing.schedule(make_task(id=f"boom-{n}"), WORKERS, make_cluster()) == "idle"
    assert 1 < len(caplog.records) <= 70
    assert "no more are logged" in caplog.records[-1].getMessage()


def test_missing_function_uses_the_builtin_without_counting_a_fallback(
    observer: RecordingObserver,
) -> None:
    """POL-010: a function the file does not define is the built-in one, not a fallback."""
    only_admit = (
        "def admit(task, cluster):\n    return {'accept': task['priority'] == 'interactive'}\n"
    )
    engine = PolicyEngine.from_source(only_admit, observer=observer)
    assert engine.defines == {"admit"}
    assert engine.admit(make_task(priority="batch"), make_cluster()).accept is False
    workers = [make_worker("a", slots_busy=3), make_worker("b", slots_busy=1)]
    assert engine.schedule(make_task(), workers, make_cluster()) == "b"
    only_schedule = "def schedule(task, workers, cluster):\n    return None\n"
    engine = PolicyEngine.from_source(only_schedule, observer=observer)
    assert engine.admit(make_task(), make_cluster()) == AdmitDecision(accept=True)
    assert engine.schedule(make_task(), workers, make_cluster()) is None
    assert observer.fallbacks == []


def test_malformed_inputs_fall_back_instead_of_raising(
    default: PolicyEngine, observer: RecordingObserver
) -> None:
    """POL-051: a task the engine cannot hand to the policy is accepted by admit and kept
    queued by schedule, reported as bad_input. The built-in admit needs no inputs (POL-041): it
    accepts without a fallback; a policy with its own admit reports one."""
    engine = PolicyEngine.from_file(None, observer=observer)
    broken_task: Any = {"id": "t", "model": "m"}
    assert engine.admit(broken_task, make_cluster()) == AdmitDecision(accept=True)
    assert engine.schedule(broken_task, [make_worker("a")], make_cluster()) is None
    assert observer.fallbacks == [("schedule", "bad_input")]
    own = PolicyEngine.from_source(builtin_source() + "\n# a copy\n", observer=observer)
    assert own.admit(broken_task, make_cluster()) == AdmitDecision(accept=True)
    assert own.schedule(broken_task, [make_worker("a")], make_cluster()) is None
    assert observer.fallbacks[1:] == [("admit", "bad_input"), ("schedule", "bad_input")]


# -- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ("def schedule(task, workers, cluster)\n    return None\n", "does not parse: x.star:1:"),
        ("def admit(task):\n    return {'accept': True}\n", "admit must take 2 positional"),
        ("def schedule(task, workers):\n    return None\n", "schedule must take 3 positional"),
        ("admit = {'accept': True}\n", "`admit` must be a function, but is of type dict"),
        ("def admit(task, cluster):\n    return undefined\n", "Variable `undefined` not found"),
        ("X = len([i for i in range(1000000000)])\n", "top-level code failed"),
        (
            "def schedule(task, workers, cluster):\n    return workers[0]['id']\n",
            "dry run of schedule(task, workers, cluster) with no workers failed: x.star:2:",
        ),
        ("def schedule(task, workers, cluster):\n    return 'w1'\n", "not an eligible worker"),
        ("def admit(task, cluster):\n    return True\n", 'must return {"accept": True|False'),
        (
            "def admit(task, cluster):\n    return {'accept': True, 'retry': 1}\n",
            "returned unknown keys ['retry']",
        ),
        ("def admit(task, cluster):\n    return admit(task, cluster)\n", "call stack overflow"),
    ],
)
def test_invalid_policies_are_rejected_with_a_clear_message(src: str, message: str) -> None:
    """POL-006, POL-011, POL-070: parse, signatures, top level, types and dry runs are checked;
    the error is INVALID_PARAMS with field policy."""
    with pytest.raises(PolicyError) as info:
        PolicyEngine.from_source(src, name="x.star")
    assert message in str(info.value)
    assert info.value.status == 400 and info.value.code == "INVALID_PARAMS"
    assert info.value.errors and info.value.errors[0]["field"] == "policy"


def test_lint_warnings_are_reported_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    """POL-070: lint warnings are kept in engine.warnings and logged, not fatal."""
    caplog.set_level(logging.WARNING, logger="llorch.policy")
    src = "LIMIT = 1\nLIMIT = 2\ndef admit(task, cluster):\n    return {'accept': True}\n"
    engine = PolicyEngine.from_source(src, name="dup.star")
    assert engine.warnings == (engine.warnings[0],)
    assert engine.warnings[0].startswith("dup.star:2:1: duplicate-top-level-assign")
    assert "duplicate-top-level-assign" in caplog.text


def test_unreadable_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the file"):
        PolicyEngine.from_file(tmp_path / "missing.star")
    (tmp_path / "latin1.star").write_bytes(b"# caf\xe9\n")
    with pytest.raises(PolicyError, match="cannot read the file"):
        PolicyEngine.from_file(tmp_path / "latin1.star")


def test_budget_must_be_positive() -> None:
    with pytest.raises(PolicyError, match="budget_ms must be > 0"):
        PolicyEngine.from_file(None, budget_ms=0)


# -- sandbox -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ('load("os", "system")\n', "`load` is not allowed"),
        (
            'def admit(task, cluster):\n    print("x")\n    return {"accept": True}\n',
            "Variable `print` not found",
        ),
        ('def admit(task, cluster):\n    return json.decode("{}")\n', "Variable `json` not found"),
        (
            'def admit(task, cluster):\n    return open("/etc/passwd")\n',
            "Variable `open` not found",
        ),
        ("def admit(task, cluster):\n    return __import__('os')\n", "not found"),
        ("while True:\n    pass\n", "does not parse"),
    ],
)
def test_policies_cannot_reach_the_host(src: str, message: str) -> None:
    """POL-060: load() is refused; no print, json or host callables; no while."""
    with pytest.raises(PolicyError) as info:
        PolicyEngine.from_source(src)
    assert message in str(info.value)


def test_policies_keep_no_state_between_calls() -> None:
    """POL-012: module globals are frozen after load."""
    counter = (
        "SEEN = []\ndef admit(task, cluster):\n    SEEN.append(1)\n    return {'accept': True}\n"
    )
    with pytest.raises(PolicyError, match="Immutable"):
        PolicyEngine.from_source(counter)


def test_policies_cannot_change_the_callers_values(default: PolicyEngine) -> None:
    """POL-024: policies get copies; the caller's values are unchanged."""
    src = (
        "def schedule(task, workers, cluster):\n"
        "    task['model'] = 'changed'\n"
        "    if workers:\n"
        "        workers[0]['state'] = 'dead'\n"
        "    cluster['now_ms'] = 0\n"
        "    return None\n"
    )
    engine = PolicyEngine.from_source(src)
    task, workers, cluster = make_task(), [make_worker("a")], make_cluster()
    assert engine.schedule(task, workers, cluster) is None
    assert (task, workers, cluster) == (make_task(), [make_worker("a")], make_cluster())


def test_policies_see_only_documented_fields() -> None:
    """POL-020, POL-021, POL-024: exactly the documented task fields, no prompt, no worker url."""
    src = (
        "def admit(task, cluster):\n"
        "    return {'accept': True, 'reason': ','.join(sorted(task.keys()))}\n"
        "def schedule(task, workers, cluster):\n"
        "    if len(workers) > 0 and 'url' in workers[0]:\n"
        "        fail('leaked')\n"
        "    return None\n"
    )
    engine = PolicyEngine.from_source(src, observer=(obs := RecordingObserver()))
    task: Any = {**make_task(), "prompt": "secret"}
    reason = engine.admit(task, make_cluster()).reason
    assert reason == ",".join(sorted(make_task()))
    worker: Any = {**make_worker("a"), "url": "http://10.0.0.1:8001"}
    assert engine.schedule(make_task(), [worker], make_cluster()) is None
    assert obs.fallbacks == []


def test_pol_003_policies_see_each_workers_current_fields() -> None:
    """POL-003, POL-022: the engine reuses the JSON of a worker row only while the row is the
    same, values and types alike, so a policy always sees the worker as it is now: a list
    changed in place, an int where a float was, a session moved to the other list."""
    src = (
        "def schedule(task, workers, cluster):\n"
        "    for w in workers:\n"
        "        if w['recent_sessions'] == ['s-1', 's-2'] and type(w['tokens_per_s']) == "
        "'float':\n"
        "            return w['id']\n"
        "    return None\n"
    )
    engine = PolicyEngine.from_source(src, observer=(obs := RecordingObserver()))
    worker = make_worker("a", recent_sessions=["s-1"])
    task, cluster = make_task(), make_cluster()
    assert engine.schedule(task, [worker], cluster) is None
    worker["recent_sessions"].append("s-2")  # the same list, changed in place
    assert engine.schedule(task, [worker], cluster) == "a"
    assert engine.schedule(task, [{**worker, "tokens_per_s": 20}], cluster) is None
    assert engine.schedule(task, [worker], cluster) == "a"
    moved = make_worker("a", recent_sessions=["s-1"], recent_prefixes=["s-2"])
    assert engine.schedule(task, [moved], cluster) is None
    assert engine.schedule(task, [worker], cluster) == "a"
    assert obs.fallbacks == []


def test_pol_051_inputs_json_cannot_hold_fall_back() -> None:
    """POL-051: a NaN or a cycle in the inputs is bad_input, not an exception. (The policy is
    a copy of the built-in, so its admit is called: the built-in's own needs no inputs.)"""
    engine = PolicyEngine.from_source(
        builtin_source() + "\n# a copy\n", observer=(obs := RecordingObserver())
    )
    cycle: list[object] = []
    cycle.append(cycle)
    nan = make_worker("a", tokens_per_s=float("nan"))
    assert engine.schedule(make_task(), [nan], make_cluster()) is None
    assert (
        engine.schedule(make_task(), [make_worker("a", recent_sessions=cycle)], make_cluster())
        is None
    )
    assert engine.admit(make_task(session_id=cycle), make_cluster()) == AdmitDecision(accept=True)
    assert obs.fallbacks == [("schedule", "bad_input")] * 2 + [("admit", "bad_input")]


# -- reload ------------------------------------------------------------------------------------


def test_holder_swaps_only_valid_policies(tmp_path: Path, observer: RecordingObserver) -> None:
    """POL-072: reload and reload_source validate first and swap only on success, keeping budget
    and observer."""
    path = tmp_path / "p.star"
    path.write_text("def admit(task, cluster):\n    return {'accept': False, 'reason': 'v1'}\n")
    holder = PolicyHolder(PolicyEngine.from_file(path, budget_ms=30, observer=observer))
    assert holder.admit(make_task(), make_cluster()).reason == "v1"

    path.write_text("def admit(task, cluster):\n    return {'accept': False, 'reason': 'v2'}\n")
    new = holder.reload()
    assert holder.engine is new and new.budget_ms == 30 and new.observer is observer
    assert holder.admit(make_task(), make_cluster()).reason == "v2"

    path.write_text("def admit(task, cluster):\n    return {'accept': maybe}\n")
    with pytest.raises(PolicyError, match="maybe"):
        holder.reload()
    assert holder.engine is new and holder.admit(make_task(), make_cluster()).reason == "v2"

    with pytest.raises(PolicyError, match="does not parse"):
        holder.reload_source("def (")
    holder.reload_source("def schedule(task, workers, cluster):\n    return None\n")
    assert holder.engine.defines == {"schedule"} and holder.engine.path is None
    assert holder.admit(make_task(), make_cluster()).accept is True
    assert holder.schedule(make_task(), [make_worker("a")], make_cluster()) is None

    path.write_text("def admit(task, cluster):\n    return {'accept': False, 'reason': 'v2'}\n")
    holder.reload()  # SIGHUP: back to the file the daemon was started with
    assert holder.engine.path == path and holder.admit(make_task(), make_cluster()).reason == "v2"

    other = tmp_path / "other.star"
    other.write_text("def admit(task, cluster):\n    return {'accept': False, 'reason': 'v3'}\n")
    holder.reload(other)
    path.unlink()
    holder.reload()
    assert holder.admit(make_task(), make_cluster()).reason == "v3"

    old = holder.replace(PolicyEngine.from_file(None))
    assert old.path == other and holder.engine.name == "default.star"


def test_pol_005_admit_decision_is_frozen() -> None:
    """POL-005: `AdmitDecision(accept, reason, retry_after_ms)` is a frozen dataclass."""
    import dataclasses

    from orchestratord.policy.types import AdmitDecision

    decision = AdmitDecision(False, "busy", 500)
    assert [f.name for f in dataclasses.fields(AdmitDecision)] == [
        "accept",
        "reason",
        "retry_after_ms",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.accept = True  # type: ignore[misc]


def test_pol_023_cluster_has_exactly_the_documented_fields() -> None:
    """POL-023, POL-024: a policy sees `cluster` with exactly queue_depth {interactive, batch},
    now_ms, workers {state: count} and running_by_tenant, whatever else the caller passes."""
    src = (
        "def admit(task, cluster):\n"
        "    keys = ','.join(sorted(cluster.keys()))\n"
        "    depth = ','.join(sorted(cluster['queue_depth'].keys()))\n"
        "    return {'accept': True, 'reason': keys + '|' + depth}\n"
    )
    engine = PolicyEngine.from_source(src, observer=(obs := RecordingObserver()))
    cluster: Any = {**make_cluster(), "secret": "x"}
    reason = engine.admit(make_task(), cluster).reason
    assert reason == "now_ms,queue_depth,running_by_tenant,workers|batch,interactive"
    assert obs.fallbacks == []


def test_pol_052_a_failing_builtin_schedules_nothing_and_admits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """POL-052: the built-in policy failing anyway (here a worker that reports 0 slots and -1
    busy, so the built-in divides by zero) makes `schedule` return None, not raise; `admit`
    with no operator policy accepts."""
    engine = PolicyEngine.from_file(None, observer=(obs := RecordingObserver()))
    broken = make_worker("a", slots_total=0, slots_busy=-1)
    assert (
        engine.schedule(
            make_task(), [broken, make_worker("b", slots_busy=-1, slots_total=0)], make_cluster()
        )
        is None
    )
    assert [fn for fn, _ in obs.fallbacks] == ["schedule"]
    assert engine.admit(make_task(), make_cluster()).accept


def test_pol_041_an_admit_left_to_a_builtin_that_rejects_is_still_called() -> None:
    """The engine answers a policy without `admit` with no call only because POL-041 makes the
    built-in accept everything; it checks that at load, so a built-in that rejected would be
    called (and obeyed), not assumed."""
    import time

    from orchestratord.policy.compile import compile_policy

    def engine(builtin_admit: str) -> PolicyEngine:
        builtin = compile_policy(
            builtin_admit + "\ndef schedule(task, workers, cluster):\n    return None\n",
            "builtin.star",
            clock=time.perf_counter,
            budget_s=10.0,
        )
        own = compile_policy("X = 1\n", "own.star", clock=time.perf_counter, budget_s=10.0)
        return PolicyEngine(
            own, builtin, path=None, sha256="", budget_ms=50, observer=None, clock=time.perf_counter
        )

    rejecting = engine('def admit(task, cluster):\n    return {"accept": False, "reason": "no"}')
    decision = rejecting.admit(make_task(), make_cluster())
    assert decision.accept is False and decision.reason == "no"
    accepting = engine('def admit(task, cluster):\n    return {"accept": True}')
    assert accepting.admit(make_task(), make_cluster()) == AdmitDecision(accept=True)


class _CountingAdapter:
    """Stands in for a compiled module's adapter and counts the calls that reach Starlark."""

    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, Counter[str]()

    def call(self, fn: str, payload: str) -> object:
        self.calls[fn] += 1
        return self.real.call(fn, payload)

    def call_with(self, options: Any, fn: str, payload: str) -> Any:
        self.calls[fn] += 1
        return self.real.call_with(options, fn, payload)


def test_pol_041_the_builtin_policy_itself_answers_admit_without_a_call() -> None:
    """POL-041, POL-002: with no --policy (`from_file(None)`) the loaded policy is the built-in,
    compiled once, and its admit is answered without encoding the inputs or calling Starlark;
    its schedule is still called, without a budget (POL-052)."""
    import dataclasses

    engine = PolicyEngine.from_file(None)
    assert engine.defines == {"admit", "schedule"}  # what the loaded file defines, as before
    counting = _CountingAdapter(engine._builtin.adapter)
    engine._builtin = dataclasses.replace(engine._builtin, adapter=counting)  # type: ignore[arg-type]
    engine._policy = dataclasses.replace(engine._policy, adapter=counting)  # type: ignore[arg-type]
    assert engine.admit(make_task(), make_cluster()) == AdmitDecision(accept=True)
    workers = [make_worker("w1"), make_worker("w2", slots_busy=1)]
    assert engine.schedule(make_task(), workers, make_cluster()) == "w1"
    assert counting.calls == {"schedule": 1}
    # The same text under another name is not the built-in: its admit is the operator's.
    own = PolicyEngine.from_source(builtin_source() + "\n# edited\n")
    counting = _CountingAdapter(own._policy.adapter)
    own._policy = dataclasses.replace(own._policy, adapter=counting)  # type: ignore[arg-type]
    assert own.admit(make_task(), make_cluster()) == AdmitDecision(accept=True)
    assert counting.calls == {"admit": 1}


def test_pol_001_the_package_exports_the_documented_interface(tmp_path: Path) -> None:
    """POL-001: `orchestratord.policy` exports the engine, the holder, the error, the observer,
    the decision, the three views and `builtin_source`; the constructors, calls and attributes
    have the documented signatures and values."""
    import hashlib
    import inspect
    import time
    import typing
    from collections.abc import Callable, Sequence

    import orchestratord.policy as policy

    names = {
        "PolicyEngine",
        "PolicyHolder",
        "PolicyError",
        "PolicyObserver",
        "AdmitDecision",
        "TaskView",
        "WorkerView",
        "ClusterView",
        "builtin_source",
    }
    assert set(policy.__all__) == names
    assert all(hasattr(policy, name) for name in names)
    assert getattr(policy.PolicyObserver, "_is_protocol", False)  # a typing.Protocol
    for view in (policy.TaskView, policy.WorkerView, policy.ClusterView):
        assert typing.is_typeddict(view)

    def params(fn: Any) -> list[tuple[str, Any, object]]:
        sig = inspect.signature(fn)
        return [(p.name, p.kind, p.default) for p in sig.parameters.values()]

    pos, kw = inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY
    empty = inspect.Parameter.empty
    clock = time.perf_counter
    assert params(PolicyEngine.from_file) == [
        ("path", pos, empty),
        ("budget_ms", kw, 50.0),
        ("observer", kw, None),
        ("clock", kw, clock),
    ]
    assert params(PolicyEngine.from_source) == [
        ("src", pos, empty),
        ("name", kw, "<inline>"),
        ("budget_ms", kw, 50.0),
        ("observer", kw, None),
        ("clock", kw, clock),
    ]
    assert typing.get_type_hints(PolicyEngine.from_file) == {
        "path": Path | None,
        "budget_ms": float,
        "observer": policy.PolicyObserver | None,
        "clock": Callable[[], float],
        "return": PolicyEngine,
    }
    assert typing.get_type_hints(PolicyEngine.admit) == {
        "task": TaskView,
        "cluster": ClusterView,
        "return": AdmitDecision,
    }
    assert typing.get_type_hints(PolicyEngine.schedule) == {
        "task": TaskView,
        "workers": Sequence[WorkerView],
        "cluster": ClusterView,
        "return": str | None,
    }

    src = "def admit(task, cluster):\n    return {'accept': False, 'reason': 'file'}\n"
    path = tmp_path / "p.star"
    path.write_text(src)
    engine = PolicyEngine.from_file(path)
    assert (engine.name, engine.path, engine.budget_ms) == (str(path), path, 50.0)
    assert engine.sha256 == hashlib.sha256(src.encode()).hexdigest()
    assert engine.defines == {"admit"} and engine.warnings == ()
    decision = engine.admit(make_task(), make_cluster())
    assert isinstance(decision, AdmitDecision) and decision.reason == "file"
    assert engine.schedule(make_task(), [make_worker("a")], make_cluster()) == "a"
    inline = PolicyEngine.from_source(src, budget_ms=7.5)
    assert (inline.name, inline.path, inline.budget_ms) == ("<inline>", None, 7.5)
    assert inline.sha256 == engine.sha256
    assert isinstance(PolicyHolder(inline).engine, PolicyEngine)
    assert isinstance(builtin_source(), str)
    with pytest.raises(PolicyError):
        PolicyEngine.from_source("def (")


class _RecordingAdapter(_CountingAdapter):
    """A counting adapter that also keeps what each call was handed."""

    def __init__(self, real: Any) -> None:
        super().__init__(real)
        self.payloads: list[tuple[str, object]] = []

    def call(self, fn: str, payload: str) -> object:
        self.payloads.append((fn, payload))
        return super().call(fn, payload)

    def call_with(self, options: Any, fn: str, payload: str) -> Any:
        self.payloads.append((fn, payload))
        return super().call_with(options, fn, payload)


def test_pol_061_policies_get_plain_values_decoded_from_one_json_string_per_call() -> None:
    """POL-061: each call hands the generated adapter one JSON string (the task, the cluster and
    each worker as lists of their values in the order of section 3); the adapter `load()`s the
    policy's functions and gives them plain Starlark dicts, lists, strings and numbers, so no
    Python object of the host (a str subclass, the adapter's own globals) reaches the policy."""
    import dataclasses
    import json

    from orchestratord.policy.compile import _adapter_source
    from orchestratord.policy.types import CLUSTER_KEYS, TASK_KEYS, WORKER_KEYS

    src = (
        "def admit(task, cluster):\n"
        "    values = [task, cluster, cluster['queue_depth'], task['id'], task['session_id'],\n"
        "              task['tenant'], task['max_tokens'], cluster['running_by_tenant']]\n"
        "    plain = dir(task['id']) == dir('') and dir(cluster['queue_depth']) == dir({})\n"
        "    return {'accept': plain, 'reason': ','.join([type(v) for v in values])}\n"
        "def schedule(task, workers, cluster):\n"
        "    for w in workers:\n"
        "        kinds = [type(w), type(w['tokens_per_s']), type(w['slots_total']),\n"
        "                 type(w['recent_sessions'])] + [type(s) for s in w['recent_sessions']]\n"
        "        if kinds[:4] != ['dict', 'float', 'int', 'list'] or dir(w['id']) != dir(''):\n"
        "            fail('not plain: %s' % kinds)\n"
        "        if [k for k in kinds[4:] if k != 'string']:\n"
        "            fail('not plain: %s' % kinds)\n"
        "    ok = [w['id'] for w in workers if w['model'] == task['model'] and\n"
        "          w['state'] == 'ready']\n"
        "    return ok[0] if ok else None\n"
    )
    engine = PolicyEngine.from_source(src, observer=(obs := RecordingObserver()))
    recording = _RecordingAdapter(engine._policy.adapter)
    engine._policy = dataclasses.replace(engine._policy, adapter=recording)  # type: ignore[arg-type]

    class Tagged(str):
        """A host string with something more on it."""

        def secret(self) -> str:
            return "host"

    class HostDict(dict[str, int]):
        def secret(self) -> str:
            return "host"

    task = make_task(id=Tagged("task-1"), session_id="s-1", tenant="acme")
    cluster = make_cluster(
        queue_depth=HostDict(interactive=3, batch=1), running_by_tenant={"acme": 2}
    )
    workers = [
        make_worker("a", recent_sessions=["s-0"], tokens_per_s=12.5),
        make_worker("b", state="draining", recent_sessions=["s-9"]),
    ]
    decision = engine.admit(task, cluster)
    assert decision.accept is True
    assert decision.reason == "dict,dict,dict,string,string,string,int,dict"
    assert engine.schedule(task, workers, cluster) == "a"
    assert obs.fallbacks == []

    # One JSON string per call: rows of values in the documented order, nothing else.
    assert TASK_KEYS == (
        "id",
        "model",
        "priority",
        "session_id",
        "max_tokens",
        "prompt_tokens",
        "wait_ms",
        "prefix_hash",
        "tenant",
        "constrained",
        "logprobs",
        "tools",
        "n",
        "tenant_limits",
        "tenant_usage",
        "failovers",
    )
    assert WORKER_KEYS == (
        "id",
        "pool",
        "model",
        "backend",
        "state",
        "slots_total",
        "slots_busy",
        "tokens_per_s",
        "last_heartbeat_ms",
        "recent_starts",
        "cached_tokens",
        "recent_sessions",
        "recent_prefixes",
    )
    assert CLUSTER_KEYS == ("queue_depth", "now_ms", "workers", "running_by_tenant")
    [(fn1, admit_payload), (fn2, schedule_payload)] = recording.payloads
    assert (fn1, fn2) == ("admit", "schedule")
    assert type(admit_payload) is str and type(schedule_payload) is str
    task_row = [task[k] for k in TASK_KEYS]
    cluster_row = [cluster[k] for k in CLUSTER_KEYS]
    worker_rows = [[w[k] for k in WORKER_KEYS] for w in workers]
    assert json.loads(admit_payload) == [task_row, cluster_row]
    assert json.loads(schedule_payload) == [task_row, cluster_row, worker_rows]

    # The adapter load()s the policy's functions; the policy cannot see the adapter's globals.
    adapter = _adapter_source(frozenset({"admit", "schedule"}))
    assert 'load("policy", _admit="admit")' in adapter
    assert 'load("policy", _schedule="schedule")' in adapter
    for name in ("_ACCEPTED", "_admit", "json"):
        with pytest.raises(PolicyError, match=f"Variable `{name}` not found"):
            PolicyEngine.from_source(f"def admit(task, cluster):\n    return {name}\n")


def test_pol_073_a_call_that_started_on_the_old_engine_finishes_on_it() -> None:
    """POL-073: engines are immutable. A `schedule` call through the holder that started on the
    old engine is held (by its own clock) while the holder swaps in a new engine; calls made
    meanwhile get the new policy, and the held call finishes with the old policy's answer,
    reported to the old engine's observer. The old engine itself still answers as before."""
    import threading
    import time

    started, swapped = threading.Event(), threading.Event()
    armed = threading.Event()

    def clock() -> float:
        if armed.is_set():  # the first read of the armed call: it is running on the old engine
            armed.clear()
            started.set()
            assert swapped.wait(30), "the holder never swapped"
        return time.perf_counter()

    choose = (
        "def schedule(task, workers, cluster):\n"
        "    mine = [w['id'] for w in workers if w['id'] == {!r}]\n"
        "    return mine[0] if mine else None\n"
    )
    workers = [make_worker("old"), make_worker("new")]
    old_observer, new_observer = RecordingObserver(), RecordingObserver()
    old = PolicyEngine.from_source(
        choose.format("old"), name="old.star", observer=old_observer, clock=clock
    )
    new = PolicyEngine.from_source(choose.format("new"), name="new.star", observer=new_observer)
    holder = PolicyHolder(old)
    results: list[str | None] = []

    def call() -> None:
        results.append(holder.schedule(make_task(), workers, make_cluster()))

    armed.set()
    thread = threading.Thread(target=call)
    thread.start()
    try:
        assert started.wait(30), "the call never started"
        assert holder.replace(new) is old
        # While the old call is still in flight, new calls run on the new engine.
        assert holder.schedule(make_task(), workers, make_cluster()) == "new"
    finally:
        swapped.set()
        thread.join(30)
    assert results == ["old"]
    assert [fn for fn, _ in old_observer.observed] == ["schedule"]
    assert [fn for fn, _ in new_observer.observed] == ["schedule"]
    assert old_observer.fallbacks == new_observer.fallbacks == []
    # The replaced engine is unchanged: it still holds and answers with the old policy.
    assert old.name == "old.star" and old.schedule(make_task(), workers, make_cluster()) == "old"
    assert holder.schedule(make_task(), workers, make_cluster()) == "new"


def test_pol_026_a_policy_sees_what_a_task_asks_of_its_worker() -> None:
    """POL-026, ORCH-244: `task.constrained`, `task.logprobs` and `task.tools` come from the
    request (through the scheduler's task_view) and a policy can route on them."""
    from orchestratord.domain.scheduler import task_view
    from orchestratord.domain.tasks import parse_task_request
    from orchestratord.domain.tenancy import OPEN

    src = (
        "def schedule(task, workers, cluster):\n"
        "    free = [w for w in workers if w['model'] == task['model']\n"
        "            and w['state'] in ('ready', 'busy') and w['slots_busy'] < w['slots_total']]\n"
        "    if not free:\n"
        "        return None\n"
        "    asks = task['constrained'] or task['logprobs'] or task['tools'] > 0\n"
        "    return free[-1]['id'] if asks else free[0]['id']\n"
    )
    engine = PolicyEngine.from_source(src)
    workers = [make_worker("slow"), make_worker("fast")]
    cluster = make_cluster()

    def tool(name: str) -> dict[str, Any]:
        return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}

    cases: list[tuple[dict[str, Any], bool, bool, int, str]] = [
        ({}, False, False, 0, "slow"),
        ({"json_schema": {"type": "object"}}, True, False, 0, "fast"),
        ({"grammar": 'root ::= "a"'}, True, False, 0, "fast"),
        ({"logprobs": True}, False, True, 0, "fast"),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [tool("f"), tool("g")]},
            False,
            False,
            2,
            "fast",
        ),
    ]
    for extra, constrained, logprobs, tools, pick in cases:
        body = {"model": "m", **({"prompt": "x"} if "messages" not in extra else {}), **extra}
        req = parse_task_request(body, caller=OPEN)
        view = task_view("t1", req, 0)
        assert (view["constrained"], view["logprobs"], view["tools"]) == (
            constrained,
            logprobs,
            tools,
        )
        assert engine.schedule(view, workers, cluster) == pick


def test_pol095_a_task_of_n_choices_goes_to_a_worker_with_n_free_slots(
    default: PolicyEngine,
) -> None:
    """POL-095, ORCH-270: the built-in schedule passes over a less busy worker without n free
    slots, and keeps the task queued when no worker has them."""
    idle_small = make_worker("small", slots_total=1, tokens_per_s=90.0)
    roomy = make_worker("roomy", slots_total=4, slots_busy=1, tokens_per_s=10.0)
    assert default.schedule(make_task(), [idle_small, roomy], make_cluster()) == "small"
    assert default.schedule(make_task(n=3), [idle_small, roomy], make_cluster()) == "roomy"
    assert default.schedule(make_task(n=4), [idle_small, roomy], make_cluster()) is None
