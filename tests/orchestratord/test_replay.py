"""What-if replay (specs/fleet.md FLT-050..FLT-055): a recorded trace through the real
admission, queue and scheduling code on a virtual clock, deterministic."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.replay import record_trace
from orchestratord.__main__ import main as orchestratord_main
from orchestratord.domain.tasks import TaskRecord, TaskStatus
from orchestratord.replay.cli import run
from orchestratord.replay.report import percentile
from orchestratord.replay.trace import RecordedTask, RecordedWorker, Trace, load_trace
from orchestratord.store.db import Store

PIN = """
def schedule(task, workers, cluster):
    # Every task on w0: wait for it rather than use another worker.
    for w in workers:
        if w["id"] == "w0" and w["slots_busy"] < w["slots_total"]:
            return "w0"
    return None
"""

REJECT_GLOBEX = """
def admit(task, cluster):
    if task["tenant"] == "globex":
        return {"accept": False, "reason": "globex is paused"}
    return {"accept": True}
"""


@pytest.fixture(scope="module")
def trace_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "trace.db"
    record_trace(path, tasks=200, workers=3, slots=2, load=0.4, seed=11)
    return path


def test_flt_052_pinning_policy_has_higher_p99_and_same_figures_every_run(
    trace_db: Path, tmp_path: Path
) -> None:
    """FLT-052, FLT-053, FLT-054: a policy that pins every task to one worker queues far longer
    at p99 than the built-in one, and a second replay gives exactly the same figures."""
    pin = tmp_path / "pin.star"
    pin.write_text(PIN)
    trace = load_trace(str(trace_db))
    assert len(trace.tasks) == 200 and [w.id for w in trace.workers] == ["w0", "w1", "w2"]
    first = run(trace, [("built-in", None), ("pin", pin)])
    second = run(load_trace(str(trace_db)), [("built-in", None), ("pin", pin)])
    assert first == second
    builtin, pinned = first
    assert pinned["queue_wait_ms"]["p99"] > 10 * max(1, builtin["queue_wait_ms"]["p99"])
    assert builtin["served"] == pinned["served"] == 200
    assert pinned["worker_utilisation"]["w1"] == pinned["worker_utilisation"]["w2"] == 0
    assert all(builtin["worker_utilisation"][w] > 0 for w in ("w0", "w1", "w2"))
    assert pinned["fallbacks"] == {} == builtin["fallbacks"]


def test_flt_053_rejections_and_tenant_share(trace_db: Path, tmp_path: Path) -> None:
    """FLT-053: admission rejections are counted, and the tenant share follows what ran."""
    policy = tmp_path / "reject.star"
    policy.write_text(REJECT_GLOBEX)
    trace = load_trace(str(trace_db))
    builtin, candidate = run(trace, [("built-in", None), ("candidate", policy)])
    globex = sum(1 for t in trace.tasks if t.tenant == "globex")
    assert candidate["rejected"] == {"ADMISSION_REJECT": globex}
    assert candidate["served"] == 200 - globex
    assert "globex" not in candidate["tenant_share"]
    assert builtin["tenant_share"]["globex"] > 0
    assert sum(builtin["tenant_share"].values()) == pytest.approx(1.0, abs=1e-3)


def test_flt_053_queue_full_counts_as_rejected(trace_db: Path, tmp_path: Path) -> None:
    """FLT-053: the real bounded queue refuses what does not fit."""
    pin = tmp_path / "pin.star"
    pin.write_text(PIN)
    (result,) = run(load_trace(str(trace_db)), [("pin", pin)], queue_capacity=4)
    assert result["rejected"]["QUEUE_FULL"] > 0
    assert result["served"] + result["rejected"]["QUEUE_FULL"] == 200


def test_flt_051_never_started_tasks_are_estimated(store_url: str) -> None:
    """FLT-051, ORCH-340: a task that never ran gets its model's median time per token x
    max_tokens; one of a model nothing ran for is skipped; a worker gone from the table is
    still the fleet. The trace is read from a SQLite file or a PostgreSQL URL alike."""
    store = Store(store_url).open()

    def record(tid: str, model: str, created: int, **more: Any) -> TaskRecord:
        status: TaskStatus = "succeeded" if more else "cancelled"
        return TaskRecord(tid, model, "interactive", status, "0" * 64, created, 10, **more)

    store.save_tasks(
        [
            record(
                "a", "m", 1000, started_ms=1000, finished_ms=1100, tokens_out=10, worker_id="gone"
            ),
            record("b", "m", 1001),
            record("c", "x", 1002),
        ]
    )
    store.close()
    trace = load_trace(store_url.removeprefix("sqlite:///"))
    assert [(t.id, t.service_ms) for t in trace.tasks] == [("a", 100), ("b", 100)]
    assert (trace.estimated, trace.skipped) == (1, 1)
    assert [(w.id, w.model, w.slots, w.tokens_per_s) for w in trace.workers] == [
        ("gone", "m", 1, 100.0)
    ]
    (result,) = run(trace, [("built-in", None)])
    assert result["queue_wait_ms"] == {"p50": 0, "p99": 99, "max": 99}


def test_flt_055_cli_table_and_json(
    trace_db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """FLT-055: `orchestratord replay` prints a table, or JSON with --json; bad input is one
    line on stderr and exit status 2; the database is only read."""
    pin = tmp_path / "pin.star"
    pin.write_text(PIN)
    before = trace_db.read_bytes()
    assert orchestratord_main(["replay", "--db", str(trace_db), "--policy", str(pin)]) == 0
    out = capsys.readouterr().out
    assert "queue wait p99 ms" in out and "built-in" in out and "candidate" in out
    assert (
        orchestratord_main(
            [
                "replay",
                "--db",
                str(trace_db),
                "--policy",
                str(pin),
                "--baseline",
                str(pin),
                "--json",
            ]
        )
        == 0
    )
    body = json.loads(capsys.readouterr().out)
    assert [p["policy"] for p in body["policies"]] == ["baseline", "candidate"]
    assert body["policies"][0]["queue_wait_ms"] == body["policies"][1]["queue_wait_ms"]
    assert trace_db.read_bytes() == before
    assert (
        orchestratord_main(["replay", "--db", str(tmp_path / "no.db"), "--policy", str(pin)]) == 2
    )
    assert "no database file" in capsys.readouterr().err
    bad = tmp_path / "bad.star"
    bad.write_text("def schedule(:\n")
    assert orchestratord_main(["replay", "--db", str(trace_db), "--policy", str(bad)]) == 2
    assert "does not parse" in capsys.readouterr().err


def test_orch_353_cli_takes_the_daemons_queue_flags(
    trace_db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ORCH-353: `orchestratord replay` takes --queue-discipline and --tenant-weight as the
    daemon does; a bad value is one line on stderr and exit status 2."""
    builtin = Path(__file__).parents[2] / "orchestratord" / "policies" / "default.star"
    base = ["replay", "--db", str(trace_db), "--policy", str(builtin), "--json"]
    for extra in (["--queue-discipline", "fifo"], ["--tenant-weight", "acme=3"]):
        assert orchestratord_main([*base, *extra]) == 0
        assert json.loads(capsys.readouterr().out)["policies"][1]["served"] == 200
    for extra, words in (
        (["--queue-discipline", "lifo"], "--queue-discipline"),
        (["--tenant-weight", "acme=0"], "--tenant-weight"),
    ):
        assert orchestratord_main([*base, *extra]) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


def test_flt_053_percentile_is_nearest_rank() -> None:
    """FLT-053: p50/p99 are nearest-rank: values that occurred."""
    assert percentile([], 99) == 0
    assert percentile([5], 50) == 5
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile(list(range(1, 101)), 50) == 50


def test_flt_055_installed_entry_point(trace_db: Path, tmp_path: Path) -> None:
    """FLT-055: the installed `orchestratord` program has the replay subcommand."""
    pin = tmp_path / "pin.star"
    pin.write_text(PIN)
    exe = Path(sys.executable).parent / "orchestratord"
    done = subprocess.run(
        [str(exe), "replay", "--db", str(trace_db), "--policy", str(pin), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["policies"][1]["policy"] == "candidate"


def _chat_trace(users: int, turns: int) -> Trace:
    """`users` chats of `turns` turns each, one turn a second per user, every prompt the chat's
    history (about 400 tokens a turn), on two workers of 3 slots."""
    tasks = []
    for turn in range(turns):
        for u in range(users):
            tasks.append(
                RecordedTask(
                    id=f"u{u}-t{turn}",
                    model="m",
                    priority="interactive",
                    tenant=None,
                    session_id=f"chat-{u}",
                    arrival_ms=1_000 * (turn * users + u),
                    prompt_tokens=400 * (turn + 1),
                    max_tokens=32,
                    service_ms=900,
                )
            )
    workers = tuple(
        RecordedWorker(f"w{i}", "m", "p", "cpu", slots=3, tokens_per_s=10.0) for i in range(2)
    )
    return Trace(tuple(tasks), workers, 0, 0)


def test_orch_405_replay_finds_cached_prefixes_through_the_index(tmp_path: Path) -> None:
    """ORCH-405: a replay simulates the workers' caches from the recorded sessions and prompt
    sizes and feeds the daemon's cache index: the built-in policy (POL-121) finds a chat's
    history where it is cached, a policy that spreads by load alone finds less of it, and with
    a prefill rate the saved prefill shortens the service time."""
    trace = _chat_trace(users=4, turns=4)
    spread = tmp_path / "least_busy.star"
    spread.write_text(
        "def schedule(task, workers, cluster):\n"
        "    ok = [w for w in workers if w['model'] == task['model'] and w['state'] == 'ready']\n"
        "    return min(ok, key=lambda w: w['slots_busy'])['id'] if ok else None\n"
    )
    builtin, blind = run(trace, [("built-in", None), ("least-busy", spread)])
    assert builtin["cached_share"] > 0.5 > blind["cached_share"]
    faster = run(trace, [("built-in", None)], prefill_tokens_per_s=1000.0)[0]
    assert sum(faster["worker_utilisation"].values()) < sum(builtin["worker_utilisation"].values())
