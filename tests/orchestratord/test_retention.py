"""Memory and storage stay bounded; the database is read off the event loop; start-up that
fails half way leaks nothing (issue 8, item 4): ORCH-170..173."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from orchestratord.app import create_app
from orchestratord.domain.tasks import TaskRecord
from orchestratord.http.openai_shapes import sse_data
from orchestratord.settings import Settings
from orchestratord.store.db import BatchWriter, Store
from tests.orchestratord.conftest import AppFactory

TASK = {"model": "m", "prompt": "hello", "max_tokens": 4}


def _on_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def test_orch_170_finished_event_logs_are_bounded_in_bytes(orchd: AppFactory) -> None:
    with orchd(retain_tasks=1000, retain_events_bytes=4000) as c:
        ids = [c.post("/v2/tasks", json=TASK).json()["task_id"] for _ in range(40)]
        for task_id in ids:
            assert c.post(f"/v2/tasks/{task_id}/cancel").status_code == 204
        service = c.app.state.service
        assert 0 < service.retained_bytes <= 4000
        retained = [i for i in ids if i in service.tasks]
        assert 0 < len(retained) < 40 and retained == ids[-len(retained) :]  # oldest go first
        # An evicted task's outcome is still there; its events are not.
        assert c.get(f"/v2/tasks/{ids[0]}").json()["status"] == "cancelled"
        r = c.get(f"/v2/tasks/{ids[0]}/events")
        assert r.status_code == 404 and "no longer retained" in r.json()["detail"]


def _record(task_id: str, status: str, finished_ms: int | None) -> TaskRecord:
    return TaskRecord(
        id=task_id,
        model="m",
        priority="batch",
        status=status,  # type: ignore[arg-type]
        prompt_hash="h",
        created_ms=1,
        finished_ms=finished_ms,
    )


def test_orch_171_finished_records_are_pruned_after_retention(store: Store) -> None:
    """ORCH-171, ORCH-340: finished records are pruned after retention."""
    store.save_tasks(
        [
            _record("old", "succeeded", 1_000),
            _record("old-failed", "failed", 2_000),
            _record("new", "cancelled", 9_000),
            _record("queued", "queued", None),
        ]
    )
    assert store.prune_finished(5_000) == 2
    assert store.get_task("old") is None and store.get_task("old-failed") is None
    assert store.get_task("new") is not None and store.get_task("queued") is not None
    assert Settings(retain_finished_s=60).retain_finished_s == 60


def test_orch_172_task_records_are_read_off_the_event_loop(
    orchd: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORCH-172: task records are read off the event loop."""
    reads: list[bool] = []
    original = Store.find_task

    def spy(self: Store, task_id: str, tenant: str | None) -> TaskRecord | None:
        reads.append(_on_loop())
        return original(self, task_id, tenant)

    monkeypatch.setattr(Store, "find_task", spy)
    with orchd(retain_tasks=1) as c:
        first = c.post("/v2/tasks", json=TASK).json()["task_id"]
        c.post(f"/v2/tasks/{first}/cancel")
        second = c.post("/v2/tasks", json=TASK).json()["task_id"]
        c.post(f"/v2/tasks/{second}/cancel")  # the first one leaves memory
        service = c.app.state.service
        c.portal.call(service.writer.flush)  # on disk now
        assert c.get(f"/v2/tasks/{first}").json()["status"] == "cancelled"
        assert c.get("/v2/tasks/unknown").status_code == 404
        assert c.post("/v2/tasks/unknown/cancel").status_code == 404
        assert c.get("/v2/tasks/unknown/events").status_code == 404
    assert len(reads) >= 4 and not any(reads)


def test_orch_173_a_start_up_failing_half_way_leaks_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORCH-173: a start-up failing half way leaks nothing."""
    closed: list[str] = []
    store_close = Store.close
    client_close = httpx.AsyncClient.aclose

    def close_store(self: Store) -> None:
        closed.append("store")
        store_close(self)

    async def close_client(self: httpx.AsyncClient) -> None:
        closed.append("client")
        await client_close(self)

    def broken(self: Store, now_ms: int) -> int:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(Store, "close", close_store)
    monkeypatch.setattr(httpx.AsyncClient, "aclose", close_client)
    monkeypatch.setattr(Store, "fail_unfinished", broken)
    app = create_app(Settings(state_dir=tmp_path))
    with pytest.raises(RuntimeError, match="disk on fire"), TestClient(app):
        pass
    assert sorted(closed) == ["client", "store"]


def test_orch_143_openai_stream_frames_escape_line_separators() -> None:
    frame = sse_data({"choices": [{"delta": {"content": "a\u2028b\u2029c\x85"}}]})
    text = frame.decode()
    assert not {"\u2028", "\u2029", "\x85"} & set(text)
    assert len(text.strip().splitlines()) == 1


def test_orch_170_an_evicted_record_not_yet_written_is_read_from_the_writer(
    store: Store,
) -> None:
    """ORCH-170, ORCH-156: a task evicted from memory right after it ended is read back as it
    ended, by its server id or its tenant's client id, before the batch writer committed it
    (the database still has the older row, or none)."""
    writer = BatchWriter(store, interval_s=3600)
    record = _record("t1", "cancelled", 5)
    record.client_id, record.tenant = "mine", "acme"
    writer.task(record)
    assert store.find_task("t1", None) is None
    assert writer.pending("t1", None) is record
    assert writer.pending("mine", "acme") is record
    assert writer.pending("mine", "other") is None
