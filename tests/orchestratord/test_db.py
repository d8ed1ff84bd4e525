from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from orchestratord.domain.registry import Worker
from orchestratord.domain.tasks import TaskRecord
from orchestratord.domain.tenancy import OPEN
from orchestratord.store.db import SCHEMA_VERSION, BatchWriter, SchemaTooNew, Store

V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL);
INSERT INTO schema_version VALUES (1);
CREATE TABLE workers (id VARCHAR(128) PRIMARY KEY, url VARCHAR(512) NOT NULL,
  model VARCHAR(256) NOT NULL, backend VARCHAR(32) NOT NULL, pool VARCHAR(128) NOT NULL,
  slots_total INTEGER NOT NULL, state VARCHAR(32) NOT NULL, last_heartbeat_ms BIGINT NOT NULL);
CREATE TABLE tasks (id VARCHAR(128) PRIMARY KEY, model VARCHAR(256) NOT NULL,
  priority VARCHAR(16) NOT NULL, status VARCHAR(16) NOT NULL, prompt_hash VARCHAR(64) NOT NULL,
  worker_id VARCHAR(128), created_ms BIGINT NOT NULL, started_ms BIGINT, finished_ms BIGINT,
  tokens_out INTEGER NOT NULL DEFAULT 0, stop_reason VARCHAR(32), error_code VARCHAR(32),
  error_message TEXT);
INSERT INTO workers VALUES ('w1', 'http://h:1', 'm', 'cpu', 'p', 2, 'ready', 5);
INSERT INTO tasks (id, model, priority, status, prompt_hash, created_ms)
  VALUES ('t-old', 'm', 'batch', 'running', 'abc', 1);
"""


def record(task_id: str, status: str = "queued") -> TaskRecord:
    return TaskRecord(
        id=task_id,
        model="m",
        priority="interactive",
        status=status,  # type: ignore[arg-type]
        prompt_hash="h" * 64,
        created_ms=1,
        tenant="acme",
    )


def test_new_database_is_wal_and_current(tmp_path: Path) -> None:
    """ORCH-060, ORCH-061: a new SQLite database is in WAL mode at the current schema version."""
    store = Store(f"sqlite:///{tmp_path / 'sub' / 'o.db'}").open()
    assert store.version() == SCHEMA_VERSION
    store.close()
    with sqlite3.connect(tmp_path / "sub" / "o.db") as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_upgrade_from_version_1_keeps_rows(tmp_path: Path) -> None:
    """ORCH-061: a version-1 database is upgraded in place, keeping its rows."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as c:
        c.executescript(V1_SCHEMA)
    store = Store(f"sqlite:///{path}").open()
    assert store.version() == SCHEMA_VERSION
    [w] = store.load_workers()
    assert (w.id, w.slots_total, w.n_ctx, w.verified) == ("w1", 2, 0, True)
    assert store.fail_unfinished(now_ms=9) == 1
    old = store.get_task("t-old")
    assert old is not None
    assert (old.status, old.error_code, old.attempts, old.tenant) == (
        "failed",
        "WORKER_RESET",
        0,
        None,
    )
    store.save_tasks([record("t-new", "succeeded")])
    new = store.get_task("t-new")
    assert new is not None and new.tenant == "acme"
    store.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """ORCH-061: a database newer than this code is refused."""
    path = tmp_path / "new.db"
    with sqlite3.connect(path) as c:
        c.executescript(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);"
            f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION + 1});"
        )
    with pytest.raises(SchemaTooNew):
        Store(f"sqlite:///{path}").open()


def test_batch_writer_coalesces_and_deletes(tmp_path: Path) -> None:
    store = Store(f"sqlite:///{tmp_path / 'o.db'}").open()

    async def scenario() -> None:
        writer = BatchWriter(store, interval_s=0.01)
        writer.start()
        rec = record("t1")
        writer.task(rec)
        rec.status, rec.tokens_out = "succeeded", 7
        writer.task(rec)
        w = Worker(id="w9", url="http://x", model="m")
        writer.worker(w, "ready")
        await writer.close()
        got = store.get_task("t1")
        assert got is not None and (got.status, got.tokens_out) == ("succeeded", 7)
        assert [x.id for x in store.load_workers()] == ["w9"]
        writer.delete_worker("w9")
        await writer.flush()
        assert store.load_workers() == []

    asyncio.run(scenario())
    store.close()


def test_orch_065_running_token_counts_are_written_per_interval_not_per_token(
    tmp_path: Path,
) -> None:
    """ORCH-065, ORCH-063: a running record whose tokens_out moves is written with the flushes
    that carry counts (one per count interval), whatever the number of tokens; an ordinary
    flush in between does not write it; a record that ended is no longer tracked."""
    store = Store(f"sqlite:///{tmp_path / 'o.db'}").open()

    def stored(task_id: str) -> tuple[str, int]:
        got = store.get_task(task_id)
        assert got is not None
        return got.status, got.tokens_out

    async def scenario() -> None:
        writer = BatchWriter(store)
        rec = record("t1")
        rec.status = "running"
        writer.task(rec)
        await writer.flush(counts=False)
        for _ in range(50):
            rec.tokens_out += 1  # what the runner does per token: no call to the writer
        await writer.flush(counts=False)
        assert stored("t1") == ("running", 0)
        await writer.flush(counts=True)
        assert stored("t1") == ("running", 50)
        rec.status, rec.tokens_out = "failed", 60
        writer.task(rec)
        await writer.flush(counts=True)
        assert stored("t1") == ("failed", 60)
        rec.tokens_out = 99  # ended: no longer written by counts
        await writer.flush(counts=True)
        assert stored("t1") == ("failed", 60)

    asyncio.run(scenario())
    store.close()


def test_saving_a_task_again_updates_its_row(tmp_path: Path) -> None:
    """ORCH-063: records are upserted by id; the statement is built once per table and
    dialect, and the same one inserts and then updates."""
    store = Store(f"sqlite:///{tmp_path / 'o.db'}").open()
    rec = record("t1")
    store.save_tasks([rec, record("t2")])
    rec.status, rec.tokens_out = "succeeded", 3
    store.save_tasks([rec])
    got = store.get_task("t1")
    assert got is not None and (got.status, got.tokens_out) == ("succeeded", 3)
    other = store.get_task("t2")
    assert other is not None and other.status == "queued"
    store.close()


def test_the_prompt_is_never_stored(tmp_path: Path) -> None:
    """ORCH-062: only the prompt's hash is stored, never the prompt (database and WAL)."""
    from orchestratord.domain.tasks import parse_task_request

    req = parse_task_request({"model": "m", "prompt": "secret words"}, caller=OPEN)
    store = Store(f"sqlite:///{tmp_path / 'o.db'}").open()
    rec = record("t1")
    rec.prompt_hash = req.prompt_hash
    store.save_tasks([rec])
    store.close()
    assert b"secret words" not in (tmp_path / "o.db").read_bytes()
    wal = tmp_path / "o.db-wal"
    assert not wal.exists() or b"secret words" not in wal.read_bytes()
