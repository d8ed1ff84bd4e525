"""Routing by what the workers have cached, end to end: real orchestratord, real llorch-workerd
processes on the tiny model, their heartbeats feeding the cache index (ORCH-400..ORCH-404,
WRK-170..WRK-173, POL-121)."""

from __future__ import annotations

import re
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.orchestratord.cluster import AUTH, MODEL, orchestratord, stream_task, wait_for, worker
from tests.support import free_port

BLOCK = ["--kv-block", "16"]
# A long shared prefix (a system prompt, a RAG template): many blocks of 16 tokens.
PREFIX = "You are the archivist of a very old library. " * 12


def run_on(worker_url: str, prompt: str) -> dict[str, Any]:
    """One job sent to a worker directly (what orchestratord never saw), its `end` data."""
    body = {"job_id": uuid.uuid4().hex, "prompt": prompt, "max_tokens": 1}
    with httpx.stream("POST", worker_url + "/execute", json=body, headers=AUTH, timeout=60) as r:
        assert r.status_code == 200
        lines = list(r.iter_lines())
    data = [line for line in lines if line.startswith("data:")]
    end: dict[str, Any] = httpx.Response(200, content=data[-1][5:]).json()
    return end


def hashes(worker_url: str, prompt: str) -> list[int]:
    r = httpx.post(worker_url + "/tokenize", json={"prompt": prompt}, headers=AUTH, timeout=30)
    assert r.status_code == 200
    answer: dict[str, Any] = r.json()
    assert answer["block_size"] == 16
    found: list[int] = answer["block_hashes"]
    return found


def index_figure(orch_url: str, figure: str) -> int:
    text = httpx.get(orch_url + "/metrics", timeout=10).text
    m = re.search(rf'llorch_orchestrator_cache_index{{figure="{figure}"}} (\S+)', text)
    return int(float(m.group(1))) if m else -1


def prediction_count(orch_url: str, outcome: str) -> int:
    text = httpx.get(orch_url + "/metrics", timeout=10).text
    m = re.search(
        rf'llorch_orchestrator_cache_predictions_total{{outcome="{outcome}"}} (\S+)', text
    )
    return int(float(m.group(1))) if m else -1


def submit(orch_url: str, prompt: str, session: str) -> tuple[dict[str, Any], dict[str, Any]]:
    events = stream_task(
        orch_url, {"model": MODEL, "prompt": prompt, "max_tokens": 2, "session_id": session}
    )
    started = next(e for e in events if e.event == "started").data
    assert events[-1].event == "end"
    return started, events[-1].data


def test_orch_402_a_prefix_cached_on_b_only_draws_new_sessions_to_b(
    tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-400, ORCH-402, ORCH-404, POL-121: a prefix that only worker B holds (it ran a job
    orchestratord never saw) draws every new session whose prompt starts with it to B, with
    the predicted cached tokens on `started` and `end`, which B then reuses (a hit)."""
    with (
        orchestratord(tmp_path) as orch,
        worker(tiny_model, tmp_path, orch.url, "w-a", extra=BLOCK) as _a,
        worker(tiny_model, tmp_path, orch.url, "w-b", extra=BLOCK) as b,
    ):
        run_on(b.url, PREFIX + "First question?")
        held = len(hashes(b.url, PREFIX + "First question?"))
        assert held >= 4
        wait_for(lambda: index_figure(orch.url, "entries") >= held, what="B's report")
        for n in range(6):
            started, end = submit(orch.url, PREFIX + f"Question {n}?", f"new-session-{n}")
            assert started["worker_id"] == "w-b"
            assert started["cached_tokens_predicted"] >= 16 * (held - 1)
            assert end["cached_tokens_predicted"] == started["cached_tokens_predicted"]
            assert end["prompt_tokens_cached"] >= end["cached_tokens_predicted"]
        assert prediction_count(orch.url, "hit") == 6
        assert prediction_count(orch.url, "miss") == 0


def test_orch_401_an_evicted_prefix_stops_attracting_tasks(
    tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-401, WRK-171: when B's only slot takes another prompt (no host-RAM cache to keep
    it, WRK-174), its evict event removes the old prefix from the index: a task with that
    prefix is then predicted nothing anywhere."""
    other = "Completely unrelated words about gardening and tomatoes. " * 3
    no_host = [*BLOCK, "--cache-ram-mib", "0"]
    with (
        orchestratord(tmp_path) as orch,
        worker(tiny_model, tmp_path, orch.url, "w-a", extra=no_host) as _a,
        worker(tiny_model, tmp_path, orch.url, "w-b", extra=no_host) as b,
    ):
        run_on(b.url, PREFIX)
        before = len(hashes(b.url, PREFIX))
        wait_for(lambda: index_figure(orch.url, "entries") == before, what="B's report")
        started, _ = submit(orch.url, PREFIX + "Still here?", "s-1")
        assert started["worker_id"] == "w-b" and started["cached_tokens_predicted"] > 0
        # B's one sequence now holds `other` only (max_tokens 1: the prompt's tokens exactly).
        run_on(b.url, other)
        after = len(hashes(b.url, other))
        assert after != before
        wait_for(lambda: index_figure(orch.url, "entries") == after, what="B's evict event")
        started, end = submit(orch.url, PREFIX + "Gone?", "s-2")
        assert started["cached_tokens_predicted"] == 0 == end["cached_tokens_predicted"]


def test_wrk_172_a_restarted_worker_resyncs(tiny_model: Path, tmp_path: Path) -> None:
    """WRK-172, ORCH-401: a worker killed (no deregistration) and restarted under the same id
    has an empty cache: its registration and first (full) report replace what the index knew
    of it, and its new blocks come in again."""
    with orchestratord(tmp_path) as orch:
        with worker(tiny_model, tmp_path, orch.url, "w-b", extra=BLOCK) as b:
            run_on(b.url, PREFIX)
            n = len(hashes(b.url, PREFIX))
            wait_for(lambda: index_figure(orch.url, "entries") == n, what="B's report")
            b.kill(signal.SIGKILL)
            b.proc.wait()
        assert index_figure(orch.url, "entries") == n  # what the dead process held, still
        with worker(tiny_model, tmp_path, orch.url, "w-b", extra=BLOCK) as b2:
            wait_for(lambda: index_figure(orch.url, "entries") == 0, what="the resync")
            resyncs = index_figure(orch.url, "resyncs")
            assert resyncs >= 2
            run_on(b2.url, PREFIX)
            wait_for(lambda: index_figure(orch.url, "entries") == n, what="the new blocks")


def test_orch_401_a_gap_in_the_reports_asks_for_a_full_one(tmp_path: Path) -> None:
    """ORCH-401: a report that skips a sequence number is not applied; the answer asks for a
    full report (`kv_resync`), and the full one restores the worker's entries."""
    with orchestratord(tmp_path) as orch:
        reg = {"worker_id": "w-x", "url": "http://127.0.0.1:9", "model": MODEL, "slots_total": 1}
        assert httpx.post(orch.url + "/v2/workers/register", json=reg, headers=AUTH).is_success

        def beat(seq: int, stored: list[int], full: bool) -> dict[str, Any]:
            kv = {"block_size": 16, "epoch": "e", "seq": seq, "full": full}
            body = {"slots_total": 1, "kv_blocks": {**kv, "stored": stored, "evicted": []}}
            r = httpx.post(orch.url + "/v2/workers/w-x/heartbeat", json=body, headers=AUTH)
            assert r.status_code == 200
            answer: dict[str, Any] = r.json()
            return answer

        assert beat(1, [1, 2, 3], True) == {"ok": True}
        assert beat(2, [4], False) == {"ok": True}
        assert index_figure(orch.url, "entries") == 4
        assert beat(4, [5], False) == {"ok": True, "kv_resync": True}
        assert index_figure(orch.url, "entries") == 0
        assert beat(5, [1, 2], True) == {"ok": True}
        assert index_figure(orch.url, "entries") == 2
        bad = {"slots_total": 1, "kv_blocks": {"block_size": 16, "stored": "x"}}
        r = httpx.post(orch.url + "/v2/workers/w-x/heartbeat", json=bad, headers=AUTH)
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "kv_blocks"


def test_wrk_174_a_prefix_kept_in_host_ram_still_draws_its_tasks(
    tiny_model: Path, tmp_path: Path
) -> None:
    """WRK-174, WRK-170, ORCH-400: when B's only slot takes another prompt, the old prefix's
    state goes to B's host RAM and stays reported: a task with that prefix still goes to B,
    which restores it (the predicted tokens reused)."""
    other = "Completely unrelated words about gardening and tomatoes. " * 3
    with (
        orchestratord(tmp_path) as orch,
        worker(tiny_model, tmp_path, orch.url, "w-a", extra=BLOCK) as _a,
        worker(tiny_model, tmp_path, orch.url, "w-b", extra=BLOCK) as b,
    ):
        run_on(b.url, PREFIX)
        run_on(b.url, other)  # the slot now holds `other`; PREFIX is in host RAM
        both = len(hashes(b.url, PREFIX)) + len(hashes(b.url, other))
        wait_for(lambda: index_figure(orch.url, "entries") == both, what="B's report")
        started, end = submit(orch.url, PREFIX + "Still there?", "s-host")
        assert started["worker_id"] == "w-b" and started["cached_tokens_predicted"] > 0
        assert end["prompt_tokens_cached"] >= end["cached_tokens_predicted"]


def test_wrk_172_a_restarted_orchestratord_gets_the_whole_cache_again(
    tiny_model: Path, tmp_path: Path
) -> None:
    """WRK-172, ORCH-401: orchestratord is killed and restarts, knowing the worker from its
    database but nothing of its cache; the heartbeats that failed meanwhile make the worker's
    next report a full one, which restores the index."""
    port = free_port()
    state = tmp_path / "state"
    with (
        orchestratord(tmp_path, port=port, state_dir=state) as orch,
        worker(tiny_model, tmp_path, orch.url, "w-b", extra=BLOCK) as b,
    ):
        run_on(b.url, PREFIX)
        n = len(hashes(b.url, PREFIX))
        wait_for(lambda: index_figure(orch.url, "entries") == n, what="B's report")
        orch.kill(signal.SIGKILL)
        orch.proc.wait()
        with orchestratord(tmp_path, port=port, state_dir=state) as again:
            wait_for(lambda: index_figure(again.url, "entries") == n, what="the resync")
            assert index_figure(again.url, "resyncs") >= 1
