"""End to end: a real orchestratord and real llorch-workerd processes (tiny GGUF) on loopback."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from orchestratord.policy import builtin_source
from tests.orchestratord.cluster import (
    ADMIN,
    AUTH,
    MODEL,
    Event,
    open_task_stream,
    orchestratord,
    read_events,
    stream_task,
    wait_for,
    worker,
    workers,
)
from tests.support import Proc

pytestmark = pytest.mark.e2e
LONG = {"model": MODEL, "prompt": "hello", "max_tokens": 16000, "ignore_eos": True, "seed": 1}


@dataclass
class Cluster:
    orch: Proc
    workers: dict[str, Proc]
    policy_file: Path

    @property
    def url(self) -> str:
        return self.orch.url


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """orchestratord (--policy FILE, a copy of the built-in) with two 2-slot workers."""
    tmp = tmp_path_factory.mktemp("e2e")
    policy = tmp / "policy.star"
    policy.write_text(builtin_source())
    with (
        orchestratord(tmp, "--policy", str(policy), "--disconnect-grace-ms", "1500") as orch,
        worker(tiny_model, tmp, orch.url, "w1", slots=2) as w1,
        worker(tiny_model, tmp, orch.url, "w2", slots=2) as w2,
    ):
        yield Cluster(orch, {"w1": w1, "w2": w2}, policy)


def kinds(events: list[Event]) -> list[str]:
    return [e.event for e in events]


def started_on(events: list[Event]) -> str:
    return str(next(e.data["worker_id"] for e in events if e.event == "started"))


def test_a_task_streams(cluster: Cluster) -> None:
    """ORCH-012, ORCH-020, ORCH-022: the submitting stream carries queued, started, tokens and end,
    ids from 0; token i counts events; end has tokens_out and ttft_ms."""
    evs = stream_task(
        cluster.url,
        {"model": MODEL, "prompt": "hello", "max_tokens": 12, "ignore_eos": True, "seed": 3},
    )
    # Token events carry whole characters, so a few tokens may share one event.
    assert kinds(evs)[:2] == ["queued", "started"] and kinds(evs)[-1] == "end"
    tokens = [e for e in evs if e.event == "token"]
    assert len(tokens) == len(evs) - 3 and 1 <= len(tokens) <= 12
    assert [e.id for e in evs] == list(range(len(evs)))
    assert [e.data["i"] for e in tokens] == list(range(len(tokens)))
    assert started_on(evs) in ("w1", "w2")
    end = evs[-1].data
    assert end["tokens_out"] == 12 and end["stop_reason"] == "MAX_TOKENS"
    assert end["ttft_ms"] > 0
    text = "".join(e.data["t"] for e in evs if e.event == "token")
    assert text
    # ORCH-014: the record keeps the prompt's length as the worker counted it (replay uses it).
    with open_task_stream(cluster.url, {"model": MODEL, "prompt": "hello", "max_tokens": 2}) as s:
        task_id, last = s.task_id, (s.head + read_events(s.lines))[-1]
    record = httpx.get(f"{cluster.url}/v2/tasks/{task_id}").json()
    assert record["prompt_tokens"] == last.data["prompt_tokens"] > 0
    metrics = httpx.get(cluster.url + "/metrics").text
    assert re.search(r"^llorch_orchestrator_tokens_out_total \d+", metrics, re.M)
    assert "llorch_orchestrator_ttft_seconds_count" in metrics


def test_twenty_concurrent_tasks_all_finish_on_both_workers(cluster: Cluster) -> None:
    body = {"model": MODEL, "prompt": "count", "max_tokens": 24, "ignore_eos": True}
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda _: stream_task(cluster.url, body), range(20)))
    assert all(r[-1].event == "end" and r[-1].data["tokens_out"] == 24 for r in results)
    assert {started_on(r) for r in results} == {"w1", "w2"}
    # Every slot is free again, in orchestratord's view and in the workers' own.
    wait_for(
        lambda: all(w["slots_busy"] == 0 for w in workers(cluster.url).values()),
        what="slots to be released",
    )
    for w in cluster.workers.values():
        wait_for(lambda w=w: httpx.get(w.url + "/health").json()["slots_busy"] == 0)


def test_cancel_mid_stream_frees_the_worker_slot(cluster: Cluster) -> None:
    """ORCH-015, WRK-053: the cancel closes the worker connection; the real worker frees the
    slot, and the stream ends `CANCELLED`."""
    with open_task_stream(cluster.url, LONG) as s:
        task_id = s.task_id
        wid = started_on(s.head)
        assert httpx.get(cluster.workers[wid].url + "/health").json()["slots_busy"] >= 1
        assert httpx.post(f"{cluster.url}/v2/tasks/{task_id}/cancel").status_code == 204
        rest = read_events(s.lines)
    assert rest[-1].event == "end" and rest[-1].data["stop_reason"] == "CANCELLED"
    assert httpx.get(f"{cluster.url}/v2/tasks/{task_id}").json()["status"] == "cancelled"
    wait_for(
        lambda: httpx.get(cluster.workers[wid].url + "/health").json()["slots_busy"] == 0,
        what="the worker to free the slot",
    )
    assert httpx.post(f"{cluster.url}/v2/tasks/{task_id}/cancel").status_code == 204


def test_resume_with_last_event_id_loses_nothing(cluster: Cluster) -> None:
    """ORCH-021: a reader resuming with Last-Event-ID gets every later event and nothing before."""
    body = {"model": MODEL, "prompt": "resume", "max_tokens": 400, "ignore_eos": True}
    r = httpx.post(cluster.url + "/v2/tasks", json=body)
    assert r.status_code == 202
    events_url = cluster.url + r.json()["events_url"]
    with httpx.stream("GET", events_url, timeout=30) as s:
        first = read_events(s.iter_lines(), stop_after=5)
    assert first[-1].event == "token"
    with httpx.stream(
        "GET", events_url, timeout=30, headers={"last-event-id": str(first[-1].id)}
    ) as s:
        rest = read_events(s.iter_lines())
    evs = first + rest
    assert [e.id for e in evs] == list(range(len(evs)))
    token_ids = [e.data["i"] for e in evs if e.event == "token"]
    assert token_ids == list(range(len(token_ids))) and len(token_ids) > 300
    assert evs[-1].event == "end" and evs[-1].data["tokens_out"] == 400


def test_disconnects_cancel_the_task_and_free_the_slot(cluster: Cluster) -> None:
    def record(task_id: str) -> dict[str, object]:
        return dict(httpx.get(f"{cluster.url}/v2/tasks/{task_id}").json())

    def idle(task_id: str) -> bool:
        wid = str(record(task_id)["worker_id"])
        return bool(httpx.get(cluster.workers[wid].url + "/health").json()["slots_busy"] == 0)

    # The submitting stream owns its task: closing it cancels at once.
    with open_task_stream(cluster.url, LONG) as submitted:
        owned = submitted.task_id
    wait_for(lambda: record(owned)["status"] == "cancelled", what="the owned task to cancel")
    wait_for(lambda: idle(owned), what="the slot of the owned task to be freed")
    # An events reader that goes away may come back; after the grace period the task stops.
    task_id = httpx.post(cluster.url + "/v2/tasks", json=LONG).json()["task_id"]
    with httpx.stream("GET", f"{cluster.url}/v2/tasks/{task_id}/events", timeout=30) as s:
        lines = s.iter_lines()
        read_events(lines, stop_after=3)
    assert record(task_id)["status"] == "running"
    wait_for(lambda: record(task_id)["status"] == "cancelled", what="the grace period to end it")
    wait_for(lambda: idle(task_id), what="the slot to be freed")


def _placements(url: str, n: int, **extra: object) -> set[str]:
    body = {"model": MODEL, "prompt": "where", "max_tokens": 4, **extra}
    return {started_on(stream_task(url, body)) for _ in range(n)}


def _pin(worker_id: str) -> str:
    return (
        "def schedule(task, workers, cluster):\n"
        "    for w in workers:\n"
        f"        if w['id'] == '{worker_id}' and w['slots_busy'] < w['slots_total']:\n"
        "            return w['id']\n"
        "    return None\n"
    )


def test_custom_policy_changes_placement_file_sighup_and_admin(cluster: Cluster) -> None:
    """ORCH-090: SIGHUP and POST /v2/admin/policy install a valid policy; an invalid file keeps the
    running one."""
    caps = cluster.url + "/v2/meta/capabilities"
    before = httpx.get(caps).json()["policy"]["sha256"]
    try:
        cluster.policy_file.write_text(_pin("w1"))
        cluster.orch.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: httpx.get(caps).json()["policy"]["sha256"] != before,
            what="SIGHUP to reload the policy",
        )
        assert _placements(cluster.url, 4) == {"w1"}
        # A broken file on SIGHUP is refused and the running policy stays.
        pinned = httpx.get(caps).json()["policy"]["sha256"]
        cluster.policy_file.write_text("def schedule(task, workers, cluster):\n  return (\n")
        cluster.orch.proc.send_signal(signal.SIGHUP)
        wait_for(
            lambda: "keeping the running policy" in cluster.orch.log_text(),
            what="the refused reload to be logged",
        )
        assert httpx.get(caps).json()["policy"]["sha256"] == pinned
        assert _placements(cluster.url, 2) == {"w1"}
        r = httpx.post(
            cluster.url + "/v2/admin/policy",
            headers=ADMIN,
            json={"source": _pin("w2"), "name": "pin-w2"},
        )
        assert r.status_code == 200, r.text
        assert _placements(cluster.url, 4) == {"w2"}
    finally:
        cluster.policy_file.write_text(builtin_source())
        r = httpx.post(cluster.url + "/v2/admin/policy", headers=ADMIN, json={})
        assert r.status_code == 200 and r.json()["sha256"] == before


def test_broken_policy_falls_back_and_the_metric_counts_it(cluster: Cluster) -> None:
    broken = (
        "def schedule(task, workers, cluster):\n"
        "    if task['id'].startswith('boom'):\n"
        "        fail('broken on purpose')\n"
        "    return None\n"
    )
    try:
        r = httpx.post(cluster.url + "/v2/admin/policy", headers=ADMIN, json={"source": broken})
        assert r.status_code == 200, r.text
        evs = stream_task(
            cluster.url, {"model": MODEL, "prompt": "x", "max_tokens": 4, "task_id": "boom-1"}
        )
        assert evs[-1].event == "end" and evs[-1].data["tokens_out"] >= 1
        metrics = httpx.get(cluster.url + "/metrics").text
        m = re.search(
            r'^llorch_orchestrator_policy_fallbacks_total\{fn="schedule",reason="error"\} (\S+)',
            metrics,
            re.M,
        )
        assert m and float(m.group(1)) >= 1
    finally:
        httpx.post(cluster.url + "/v2/admin/policy", headers=ADMIN, json={})


def test_worker_sigkill_mid_task_and_before_first_token(tiny_model: Path, tmp_path: Path) -> None:
    """ORCH-052: a worker lost after a token ends the task WORKER_RESET (with failover off,
    ORCH-384); before the first token the task is retried elsewhere; ORCH-041: the killed
    worker is marked dead."""
    with (
        orchestratord(tmp_path, "--retry-attempts", "2", "--failover-max", "0") as orch,
        worker(tiny_model, tmp_path, orch.url, "k1") as k1,
        worker(tiny_model, tmp_path, orch.url, "k2") as k2,
    ):
        procs = {"k1": k1, "k2": k2}
        with open_task_stream(orch.url, LONG) as s:
            task_id = s.task_id
            victim = started_on(s.head)
            procs[victim].kill(signal.SIGKILL)
            rest = read_events(s.lines)
        assert rest[-1].event == "error"
        assert rest[-1].data["code"] == "WORKER_RESET" and rest[-1].data["retriable"] is True
        rec = httpx.get(f"{orch.url}/v2/tasks/{task_id}").json()
        assert (rec["status"], rec["error_code"]) == ("failed", "WORKER_RESET")
        survivor = "k2" if victim == "k1" else "k1"
        # The dead worker gets no more work: the next task runs on the survivor.
        evs = stream_task(orch.url, {"model": MODEL, "prompt": "again", "max_tokens": 4})
        assert started_on(evs) == survivor and evs[-1].event == "end"

        # Before the first token: a registered worker that is gone (nothing listens there)
        # is tried first by policy, fails to connect, and the task is retried on the survivor.
        ghost = {
            "worker_id": "ghost",
            "url": "http://127.0.0.1:9",
            "model": MODEL,
            "slots_total": 4,
        }
        assert (
            httpx.post(orch.url + "/v2/workers/register", json=ghost, headers=AUTH).status_code
            == 201
        )
        prefer_ghost = (
            "def schedule(task, workers, cluster):\n"
            "    free = [w for w in workers if w['slots_busy'] < w['slots_total']]\n"
            "    for w in free:\n"
            "        if w['id'] == 'ghost':\n"
            "            return 'ghost'\n"
            "    return free[0]['id'] if free else None\n"
        )
        r = httpx.post(orch.url + "/v2/admin/policy", headers=ADMIN, json={"source": prefer_ghost})
        assert r.status_code == 200, r.text
        evs = stream_task(
            orch.url, {"model": MODEL, "prompt": "retry", "max_tokens": 4, "task_id": "retry-1"}
        )
        assert evs[-1].event == "end", evs
        assert started_on(evs) == survivor
        rec = httpx.get(f"{orch.url}/v2/tasks/retry-1").json()
        assert rec["attempts"] == 2 and rec["status"] == "succeeded"
        # The killed worker stops heartbeating and is marked dead.
        wait_for(
            lambda: workers(orch.url)[victim]["state"] == "dead",
            timeout=20,
            what="the killed worker to be marked dead",
        )


def test_orch_053_each_attempt_that_reaches_a_worker_gets_a_started_event(
    smollm2_model: Path, tmp_path: Path
) -> None:
    """ORCH-053, ORCH-052: a task whose first attempt reached a worker (it said `started`) and
    failed before a token is retried on another worker; its stream has one `started` event per
    attempt, each naming its worker, and the record counts both attempts.

    Real workers on SmolLM2: a worker says `started` on its own once a prompt takes longer than
    50 ms (WRK-023), and this prompt takes a second or more to prefill on this model, so the
    test kills the worker that said `started` while it is still prefilling, as a crash would."""
    prompt = " ".join(f"The number {i} is followed by the number {i + 1}." for i in range(30))
    with (
        orchestratord(tmp_path, "--retry-attempts", "2") as orch,
        worker(smollm2_model, tmp_path, orch.url, "a", extra=["--n-ctx", "2048"]) as a,
        worker(smollm2_model, tmp_path, orch.url, "b", extra=["--n-ctx", "2048"]) as b,
    ):
        model = workers(orch.url)["a"]["model"]
        body = {"model": model, "prompt": prompt, "max_tokens": 2, "task_id": "orch-053"}
        with open_task_stream(orch.url, body, head=0, timeout=120) as s:
            head = read_events(s.lines, until="started")
            assert kinds(head) == ["queued", "started"], head
            victim = started_on(head)
            {"a": a, "b": b}[victim].kill(signal.SIGKILL)
            evs = head + read_events(s.lines)
        survivor = "b" if victim == "a" else "a"
        assert [k for k in kinds(evs) if k != "token"] == ["queued", "started", "started", "end"]
        first, second = (e.data for e in evs if e.event == "started")
        assert (first["worker_id"], second["worker_id"]) == (victim, survivor), evs
        assert evs[-1].data["tokens_out"] == 2
        rec = httpx.get(f"{orch.url}/v2/tasks/orch-053").json()
        assert (rec["status"], rec["attempts"], rec["worker_id"]) == (
            "succeeded",
            2,
            survivor,
        )


def test_restart_keeps_the_registry_and_fails_unfinished_tasks(
    tiny_model: Path, tmp_path: Path, store_url: str
) -> None:
    """ORCH-064, ORCH-340: a task run on a real worker is read back after orchestratord is
    killed and started again on the same database, SQLite or PostgreSQL; the one left running
    fails WORKER_RESET and the kept worker takes new work."""
    state = tmp_path / "state"
    db = ("--db-url", store_url)
    with orchestratord(tmp_path, *db, state_dir=state) as orch:
        port = orch.port
        with worker(tiny_model, tmp_path, orch.url, "r1") as w:
            short = {"model": MODEL, "prompt": "a", "max_tokens": 3, "ignore_eos": True}
            done = stream_task(orch.url, {**short, "task_id": "kept"})
            assert done[-1].event == "end"
            with open_task_stream(orch.url, LONG) as s:
                task_id = s.task_id
                time.sleep(0.3)  # the batch writer's flush interval is 50 ms
                rec = httpx.get(f"{orch.url}/v2/tasks/{task_id}").json()
                assert rec["status"] == "running", rec
                orch.kill(signal.SIGKILL)
            with orchestratord(tmp_path, *db, port=port, state_dir=state) as orch2:
                before = httpx.get(f"{orch2.url}/v2/tasks/kept").json()
                assert (before["status"], before["tokens_out"]) == ("succeeded", 3), before
                listed = workers(orch2.url)
                assert "r1" in listed and listed["r1"]["state"] in ("unverified", "ready")
                rec = httpx.get(f"{orch2.url}/v2/tasks/{task_id}").json()
                assert (rec["status"], rec["error_code"]) == ("failed", "WORKER_RESET")
                wait_for(
                    lambda: workers(orch2.url)["r1"]["state"] == "ready",
                    what="the kept worker to be re-verified by heartbeat",
                )
                evs = stream_task(orch2.url, {"model": MODEL, "prompt": "hi", "max_tokens": 4})
                assert started_on(evs) == "r1" and evs[-1].event == "end"
                assert w.proc.poll() is None
                # A graceful stop (SIGTERM) ends open streams with an error event, not a cut.
                with open_task_stream(orch2.url, LONG) as s:
                    orch2.proc.send_signal(signal.SIGTERM)
                    rest = read_events(s.lines)
                assert rest[-1].event == "error" and rest[-1].data["code"] == "WORKER_RESET"
                orch2.proc.wait(timeout=15)
                wait_for(lambda: httpx.get(w.url + "/health").json()["slots_busy"] == 0)


# SQLite only: the PostgreSQL run of the restart test above covers that back-end at less cost.
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_orch_065_tokens_out_survives_an_orchestratord_crash(
    tiny_model: Path, tmp_path: Path, store_url: str
) -> None:
    """ORCH-065, ORCH-064, ORCH-340: a running task's token count reaches the database while it
    streams (it used to be written only when the task ended), so after a SIGKILL and a restart
    its record is failed WORKER_RESET and still shows the tokens it had sent."""
    state = tmp_path / "state"
    db = ("--db-url", store_url)

    def stored_tokens(task_id: str) -> int:
        engine = sa.create_engine(store_url)
        try:
            with engine.connect() as c:
                row = c.execute(
                    sa.text("SELECT tokens_out FROM tasks WHERE id = :id"), {"id": task_id}
                ).first()
        finally:
            engine.dispose()
        return int(row[0]) if row else 0

    with orchestratord(tmp_path, *db, state_dir=state) as orch:
        port = orch.port
        with worker(tiny_model, tmp_path, orch.url, "c1"):
            with open_task_stream(orch.url, LONG, head=25) as s:
                task_id = s.task_id
                assert sum(e.event == "token" for e in s.head) == 25
                live = httpx.get(f"{orch.url}/v2/tasks/{task_id}").json()
                assert live["status"] == "running" and live["tokens_out"] >= 25
                wait_for(lambda: stored_tokens(task_id) >= 25, what="tokens_out on disk")
                orch.kill(signal.SIGKILL)
            with orchestratord(tmp_path, *db, port=port, state_dir=state) as orch2:
                rec = httpx.get(f"{orch2.url}/v2/tasks/{task_id}").json()
                assert (rec["status"], rec["error_code"]) == ("failed", "WORKER_RESET")
                assert rec["tokens_out"] >= 25


def test_orch_164_a_task_for_a_restarting_workers_model_queues_and_runs(
    tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-164: while the only worker of a model restarts (it deregistered on its way out),
    a task for that model is queued, not 404, and runs once the worker is back."""
    with orchestratord(tmp_path, "--model-grace-ms", "600000") as orch:
        with worker(tiny_model, tmp_path, orch.url, "g1"):
            pass
        wait_for(
            lambda: workers(orch.url).get("g1", {"state": "dead"})["state"] == "dead",
            what="the worker to be gone",
        )
        r = httpx.post(
            orch.url + "/v2/tasks", json={"model": MODEL, "prompt": "hi", "max_tokens": 4}
        )
        assert r.status_code == 202, r.text
        task_id = r.json()["task_id"]
        with worker(tiny_model, tmp_path, orch.url, "g1"):
            rec = wait_for(
                lambda: (
                    (x := httpx.get(f"{orch.url}/v2/tasks/{task_id}").json())["status"]
                    == "succeeded"
                    and x
                ),
                what="the queued task to run",
            )
        assert rec["worker_id"] == "g1"


def test_queue_full_is_429_with_real_processes(tiny_model: Path, tmp_path: Path) -> None:
    with orchestratord(tmp_path, "--queue-capacity", "2", "--expect-model", "not-served") as orch:
        body = {"model": "not-served", "prompt": "x", "max_tokens": 1}
        for _ in range(2):
            assert httpx.post(orch.url + "/v2/tasks", json=body).status_code == 202
        r = httpx.post(orch.url + "/v2/tasks", json=body)
        assert r.status_code == 429 and r.json()["code"] == "QUEUE_FULL"
        assert int(r.headers["retry-after"]) >= 1


def test_orch_063_orch_014_neither_prompt_nor_tokens_reach_the_database(
    tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-063, ORCH-014: the database keeps records, never a prompt or a generated token.
    A task with a distinctive prompt runs to its end; the database files (main file and
    write-ahead log) hold its record (its id) but not the prompt nor any run of the text."""
    state = tmp_path / "state"
    prompt = "zebra marmalade quintessence 4711"
    body = {"model": MODEL, "prompt": prompt, "max_tokens": 48, "ignore_eos": True, "seed": 9}
    with (
        orchestratord(tmp_path, state_dir=state) as orch,
        worker(tiny_model, tmp_path, orch.url, "p1"),
        open_task_stream(orch.url, body) as s,
    ):
        evs = s.head + read_events(s.lines)
        assert evs[-1].event == "end"
        text = "".join(e.data["t"] for e in evs if e.event == "token")
        assert len(text) >= 24
        wait_for(
            lambda: (
                s.task_id.encode()
                in b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())
            ),
            what="the task's record to reach the database",
        )
    stored = b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())
    assert prompt.encode() not in stored
    pieces = [text[i : i + 12] for i in range(0, len(text) - 12, 6)]
    leaked = [p for p in pieces if p.strip() and p.encode() in stored]
    assert not leaked, leaked


# ORCH-163's test runs on a worker of its own with a small context: the shared workers' 16384
# tokens took the tiny model most of half a minute to prefill, and a small context proves the
# same. About 1,000 tokens (n_ctx 1024): far more than one per 64 bytes, and more bytes than
# n_ctx, so only the tokenizer can tell whether it fits.
SMALL_N_CTX = 1024
NEAR_CONTEXT = "the quick brown fox " * 250


def task_ids(url: str) -> set[str]:
    r = httpx.get(url + "/v2/tasks", params={"limit": 500}, headers=ADMIN, timeout=10)
    r.raise_for_status()
    return {t["id"] for t in r.json()["tasks"]}


def test_orch_163_over_the_context_by_one_token_is_400_at_submit_and_no_task(
    tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-163, WRK-032: the prompt is counted by the model's tokenizer at submit: one token
    beyond the context is a 400 problem (JSON or streaming submit) and creates no task; exactly
    at the context the task runs."""
    with (
        orchestratord(tmp_path) as orch,
        worker(tiny_model, tmp_path, orch.url, "w1", extra=["--n-ctx", str(SMALL_N_CTX)]) as w1,
    ):
        counted = httpx.post(
            w1.url + "/tokenize", json={"prompt": NEAR_CONTEXT}, headers=AUTH
        ).json()
        n, n_ctx = counted["n_tokens"], counted["n_ctx"]
        assert n_ctx == SMALL_N_CTX and len(NEAR_CONTEXT.encode()) > n_ctx
        assert n_ctx - 100 < n < n_ctx, "the prompt is near the context, as the test needs"
        before = task_ids(orch.url)
        over = {"model": MODEL, "prompt": NEAR_CONTEXT, "max_tokens": n_ctx - n + 1}
        for accept in ("application/json", "text/event-stream"):
            r = httpx.post(
                orch.url + "/v2/tasks", json=over, headers={"accept": accept}, timeout=30
            )
            assert r.status_code == 400, r.text
            assert r.headers["content-type"] == "application/problem+json"
            problem = r.json()
            assert problem["code"] == "INVALID_PARAMS"
            assert problem["errors"] == [
                {"field": "max_tokens", "message": "prompt + max_tokens exceeds n_ctx"}
            ]
        assert task_ids(orch.url) == before
        evs = stream_task(orch.url, {**over, "max_tokens": n_ctx - n}, timeout=120)
        assert kinds(evs)[:2] == ["queued", "started"] and kinds(evs)[-1] == "end"
        assert evs[-1].data["prompt_tokens"] == n
