from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestratord.domain.registry import Worker
from orchestratord.domain.tasks import TaskQuery, TaskRecord
from orchestratord.domain.tenancy import OPEN
from orchestratord.store.db import (
    AUTO_ID,
    SCHEMA_VERSION,
    BatchWriter,
    SchemaTooNew,
    Store,
    _upsert_many,
)
from tests.stores import run_sql

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


def test_orch_341_upgrade_from_version_1_keeps_rows(store_url: str) -> None:
    """ORCH-061, ORCH-341: a version-1 database is upgraded in place, keeping its rows, on
    SQLite and on PostgreSQL (the same `_UPGRADES` DDL), and gains the tables added since."""
    run_sql(store_url, V1_SCHEMA)
    store = Store(store_url).open()
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
    assert set(sa.inspect(store.engine).get_table_names()) >= {"compare_runs", "tasks"}
    store.close()
    store = Store(store_url).open()  # opened again: nothing left to upgrade
    assert store.version() == SCHEMA_VERSION and store.get_task("t-new") is not None
    store.close()


def test_newer_schema_is_refused(store_url: str) -> None:
    """ORCH-061, ORCH-341: a database newer than this code is refused."""
    run_sql(
        store_url,
        "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        f"INSERT INTO schema_version VALUES ({SCHEMA_VERSION + 1});",
    )
    with pytest.raises(SchemaTooNew):
        Store(store_url).open()


def test_new_database_is_current(store: Store) -> None:
    """ORCH-061, ORCH-340: a new database, on either back-end, is at the current version."""
    assert store.version() == SCHEMA_VERSION


def test_batch_writer_coalesces_and_deletes(store: Store) -> None:
    """ORCH-063, ORCH-340: the batch writer's upserts and deletes, on both back-ends."""

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


def test_orch_065_running_token_counts_are_written_per_interval_not_per_token(
    store: Store,
) -> None:
    """ORCH-065, ORCH-063: a running record whose tokens_out moves is written with the flushes
    that carry counts (one per count interval), whatever the number of tokens; an ordinary
    flush in between does not write it; a record that ended is no longer tracked."""

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


def test_saving_a_task_again_updates_its_row(store: Store) -> None:
    """ORCH-063, ORCH-342: records are upserted by id; the statement is built once per table
    and dialect, and the same one inserts and then updates."""
    rec = record("t1")
    store.save_tasks([rec, record("t2")])
    rec.status, rec.tokens_out = "succeeded", 3
    store.save_tasks([rec])
    got = store.get_task("t1")
    assert got is not None and (got.status, got.tokens_out) == ("succeeded", 3)
    other = store.get_task("t2")
    assert other is not None and other.status == "queued"


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


def test_orch_340_millisecond_times_and_listing_on_both_backends(store: Store) -> None:
    """ORCH-340: wall-clock milliseconds (past 2**31) round-trip on both back-ends, and a
    listing pages newest first by (created_ms, id) with the tenant filter, as on SQLite."""
    now = 1_765_000_000_000
    records = []
    for i, tenant in enumerate(("acme", None, "acme", "acme")):
        r = record(f"t{i}", "succeeded")
        r.created_ms, r.started_ms, r.finished_ms = now + i // 2, now + 5, now + 2**33
        r.tenant = tenant
        records.append(r)
    store.save_tasks(records)
    got = store.get_task("t3")
    assert got is not None and (got.created_ms, got.finished_ms) == (now + 1, now + 2**33)
    first = store.list_tasks(TaskQuery(tenant="acme", restricted=True, limit=2))
    assert [r.id for r in first] == ["t3", "t2"]
    rest = store.list_tasks(
        TaskQuery(tenant="acme", restricted=True, limit=2, before=(first[-1].created_ms, "t2"))
    )
    assert [r.id for r in rest] == ["t0"]
    assert [r.id for r in store.list_tasks(TaskQuery(tenant=None, restricted=True))] == ["t1"]
    assert store.prune_finished(now + 2**33 + 1) == 4


def test_orch_342_upsert_by_composite_key_adds_counters_atomically(store: Store) -> None:
    """ORCH-342: the store's upsert takes any table's primary key (here two columns), and
    the counters it is told to add grow by each row written, with concurrent writers on
    separate connections, on SQLite and on PostgreSQL (READ COMMITTED); other columns, a
    JSON document among them, take the last row's values."""
    table = sa.Table(
        "usage_probe",
        sa.MetaData(),
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("hour_ms", sa.BigInteger, primary_key=True),
        sa.Column("tokens", sa.BigInteger, nullable=False),
        sa.Column("label", sa.String(32)),
        sa.Column("detail", sa.JSON),
    )
    table.create(store.engine)
    hour = 1_765_000_000_000

    def write(i: int) -> None:
        rows = [
            {"tenant": "a", "hour_ms": hour, "tokens": 3, "label": f"l{i}", "detail": {"i": i}},
            {"tenant": "b", "hour_ms": hour + i % 2, "tokens": 1, "label": None, "detail": None},
        ]
        with store.engine.begin() as c:
            _upsert_many(c, table, rows, add=("tokens",))

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(40)))
    with store.engine.connect() as c:
        rows = c.execute(sa.select(table).order_by(table.c.tenant, table.c.hour_ms)).all()
    assert [(r.tenant, r.hour_ms, r.tokens) for r in rows] == [
        ("a", hour, 120),
        ("b", hour, 20),
        ("b", hour + 1, 20),
    ]
    label, detail = rows[0].label, rows[0].detail  # plain columns: replaced, by the same row
    assert label is not None and detail == {"i": int(label[1:])}


def test_orch_343_pool_settings_come_from_the_url(store_url: str) -> None:
    """ORCH-343: pool_size and max_overflow in the URL's query set the connection pool and
    are not passed to the driver; a bad value is refused before connecting."""
    sep = "&" if "?" in store_url else "?"
    store = Store(f"{store_url}{sep}pool_size=3&max_overflow=1&pool_recycle=600").open()
    try:
        pool = store.engine.pool
        assert isinstance(pool, sa.QueuePool)
        assert (pool.size(), pool._max_overflow, pool._recycle) == (3, 1, 600)
        assert "pool_size" not in str(store.engine.url)
        assert store.version() == SCHEMA_VERSION
    finally:
        store.close()
    with pytest.raises(ValueError, match="pool_size"):
        Store(f"{store_url}{sep}pool_size=many").open()


@pytest.mark.parametrize("store_url", ["postgresql"], indirect=True)
def test_orch_343_a_postgresql_connection_the_server_dropped_costs_no_failed_read(
    store: Store,
) -> None:
    """ORCH-343: the server ends the pooled connections (as a database restart does); the
    next read checks its connection, takes a new one, and succeeds."""
    store.save_tasks([record("t1")])
    assert store.get_task("t1") is not None  # a pooled connection now
    admin = sa.create_engine(store.url)
    try:
        with admin.connect() as c:
            ended = c.execute(
                sa.text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
            ).scalar()
    finally:
        admin.dispose()
    assert ended is not None and ended >= 1
    got = store.get_task("t1")
    assert got is not None and got.status == "queued"


def test_orch_342_auto_id_is_generated_on_both_backends(store: Store) -> None:
    """ORCH-342: a table keyed by `AUTO_ID` (an audit trail's, say) gets increasing ids from
    the database on SQLite (the rowid) and PostgreSQL (BIGINT), with big values kept."""
    table = sa.Table(
        "log_probe",
        sa.MetaData(),
        sa.Column("id", AUTO_ID, primary_key=True),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
    )
    table.create(store.engine)
    with store.engine.begin() as c:
        first = c.execute(table.insert().values(at_ms=2**40)).inserted_primary_key
        c.execute(table.insert(), [{"at_ms": 1}, {"at_ms": 2}])
        ids = c.execute(sa.select(table.c.id).order_by(table.c.id)).scalars().all()
    assert first is not None and first[0] == ids[0]
    assert len(ids) == 3 and ids == sorted(set(ids))
