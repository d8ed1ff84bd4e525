"""Registry and task records through SQLAlchemy Core: SQLite (WAL) by default, any URL otherwise.

`Store` is synchronous and owns the schema and its upgrades; `BatchWriter` is the async adapter
the daemon uses: it coalesces record changes and writes them in one transaction per flush, off
the event loop, so the relay never waits on the database and no token is ever written.

Schema versions: 1 (first release), 2 (adds workers.n_ctx/registered_ms and
tasks.tenant/session_id/max_tokens/ttft_ms/attempts), 3 (tasks.prompt_tokens), 4
(tasks.client_id, looked up with the tenant). `Store.open` upgrades older files in place.

Back-ends (ORCH-340..343): SQLite and PostgreSQL (psycopg 3), the same code and schema; the
test suite runs every store test on both. What keeps a table portable:
- define it on `metadata`: `migrate` creates any table a database lacks, with its indexes,
  no version bump; a column added to an existing table is an `_UPGRADES` entry (plain
  `ALTER TABLE ... ADD COLUMN` DDL, valid on both);
- times in milliseconds are `sa.BigInteger` (PostgreSQL's INTEGER is 32 bits; SQLite does
  not care, so only the PostgreSQL tests catch it); a generated id is `AUTO_ID`;
- write rows with `_upsert_many` (insert or update by the primary key, counters added on
  the database), never `INSERT OR ...` or dialect SQL in text; a document is `sa.Text` of
  `json.dumps` (as compare_runs) or `sa.JSON`, both portable;
- PostgreSQL runs at READ COMMITTED: a read-modify-write of a counter is one `UPDATE ... SET
  n = n + :d` or an `add=` upsert, not a SELECT then a write; LIKE is case-sensitive there.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from orchestratord.domain.registry import Worker
from orchestratord.domain.tasks import TaskQuery, TaskRecord

log = logging.getLogger("llorch.orchestratord.store.db")
SCHEMA_VERSION = 4

# An integer primary key the database generates: BIGINT identity on PostgreSQL, and on
# SQLite INTEGER, since only an INTEGER PRIMARY KEY is the rowid there (a BIGINT one is never
# filled in, and an insert without it fails).
AUTO_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

metadata = sa.MetaData()
schema_version = sa.Table(
    "schema_version", metadata, sa.Column("version", sa.Integer, nullable=False)
)
workers = sa.Table(
    "workers",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("url", sa.String(512), nullable=False),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("backend", sa.String(32), nullable=False),
    sa.Column("pool", sa.String(128), nullable=False),
    sa.Column("slots_total", sa.Integer, nullable=False),
    sa.Column("state", sa.String(32), nullable=False),
    sa.Column("last_heartbeat_ms", sa.BigInteger, nullable=False),
    sa.Column("n_ctx", sa.Integer, nullable=False, server_default="0"),
    sa.Column("registered_ms", sa.BigInteger, nullable=False, server_default="0"),
)
tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("priority", sa.String(16), nullable=False),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("prompt_hash", sa.String(64), nullable=False),
    sa.Column("worker_id", sa.String(128)),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("started_ms", sa.BigInteger),
    sa.Column("finished_ms", sa.BigInteger),
    sa.Column("tokens_out", sa.Integer, nullable=False, server_default="0"),
    sa.Column("stop_reason", sa.String(32)),
    sa.Column("error_code", sa.String(32)),
    sa.Column("error_message", sa.Text),
    sa.Column("tenant", sa.String(128)),
    sa.Column("session_id", sa.String(256)),
    sa.Column("max_tokens", sa.Integer, nullable=False, server_default="128"),
    sa.Column("ttft_ms", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("prompt_tokens", sa.Integer),  # as the worker counted them (replay uses them)
    sa.Column("client_id", sa.String(128)),  # the client's task_id, the tenant's own (ORCH-156)
)
# Listings page newest first; retention deletes by finish time (created in `migrate` too,
# so databases made before they existed get them).
INDEXES = (
    sa.Index("ix_tasks_created", tasks.c.created_ms, tasks.c.id),
    sa.Index("ix_tasks_finished", tasks.c.finished_ms),
    # Not a unique index: the service keeps (tenant, client_id) unique (ORCH-157), and a
    # constraint would turn one stray duplicate into a batch the writer retries for ever.
    sa.Index("ix_tasks_client", tasks.c.tenant, tasks.c.client_id),
)
# Compare runs (specs ORCH-212): the run record as JSON, with the columns it is listed by.
compare_runs = sa.Table(
    "compare_runs",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False, index=True),
    sa.Column("tenant", sa.String(128), index=True),
    sa.Column("model", sa.String(256), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("record", sa.Text, nullable=False),
)
# API keys made at run time (ORCH-300): only the SHA-256 of the secret is stored.
api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("tenant", sa.String(128), nullable=False),
    sa.Column("label", sa.String(128)),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("expires_ms", sa.BigInteger),
    sa.Column("revoked_ms", sa.BigInteger),
    sa.Column("last_used_ms", sa.BigInteger),
)
# The audit trail (ORCH-306): one row per admin action, listed newest first.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", AUTO_ID, primary_key=True, autoincrement=True),
    sa.Column("at_ms", sa.BigInteger, nullable=False, index=True),
    sa.Column("who", sa.String(200), nullable=False),
    sa.Column("action", sa.String(64), nullable=False, index=True),
    sa.Column("target", sa.String(256)),
    sa.Column("before_json", sa.Text),
    sa.Column("after_json", sa.Text),
)
# Per-tenant limits (ORCH-323) and usage by hour, tenant, key and model (ORCH-326). The
# usage columns are NOT NULL ('' for no tenant or no key) so the primary key holds for all.
tenant_limits = sa.Table(
    "tenant_limits",
    metadata,
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("concurrency", sa.BigInteger),
    sa.Column("rpm", sa.BigInteger),
    sa.Column("tpm", sa.BigInteger),
    sa.Column("daily_tokens", sa.BigInteger),
    sa.Column("monthly_tokens", sa.BigInteger),
    sa.Column("weight", sa.Float, nullable=False, server_default="1.0"),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
)
usage_hourly = sa.Table(
    "usage_hourly",
    metadata,
    sa.Column("hour_ms", sa.BigInteger, primary_key=True),
    sa.Column("tenant", sa.String(128), primary_key=True),
    sa.Column("key_id", sa.String(128), primary_key=True),
    sa.Column("model", sa.String(256), primary_key=True),
    sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
    sa.Column("cached_tokens", sa.BigInteger, nullable=False),
    sa.Column("completion_tokens", sa.BigInteger, nullable=False),
    sa.Column("tasks", sa.BigInteger, nullable=False),
    sa.Column("errors", sa.BigInteger, nullable=False),
)
_USAGE_KEY = ("hour_ms", "tenant", "key_id", "model")
_USAGE_COUNTS = ("prompt_tokens", "cached_tokens", "completion_tokens", "tasks", "errors")
# The fleet's desired state (specs/fleet.md FLT-080): one row, the body GET /v2/fleet returns.
fleet_spec = sa.Table(
    "fleet_spec",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
)
_ADDED_TABLES = (compare_runs, fleet_spec)

# Columns each upgrade adds: version -> [(table, column DDL)].
_UPGRADES: dict[int, list[tuple[str, str]]] = {
    2: [
        ("workers", "n_ctx INTEGER NOT NULL DEFAULT 0"),
        ("workers", "registered_ms BIGINT NOT NULL DEFAULT 0"),
        ("tasks", "tenant VARCHAR(128)"),
        ("tasks", "session_id VARCHAR(256)"),
        ("tasks", "max_tokens INTEGER NOT NULL DEFAULT 128"),
        ("tasks", "ttft_ms FLOAT"),
        ("tasks", "attempts INTEGER NOT NULL DEFAULT 0"),
    ],
    3: [("tasks", "prompt_tokens INTEGER")],
    4: [("tasks", "client_id VARCHAR(128)")],
}
_TASK_COLUMNS = [c.name for c in tasks.columns]


class SchemaTooNew(RuntimeError):
    """The database was written by a newer orchestratord."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


# Connection pool settings an operator may give in the URL's query (ORCH-343): SQLAlchemy
# takes them as create_engine arguments, and the driver would refuse them as its own options.
_POOL_OPTIONS: dict[str, Callable[[str], Any]] = {
    "pool_size": int,
    "max_overflow": int,
    "pool_timeout": float,
    "pool_recycle": int,
    "pool_pre_ping": lambda v: v.lower() in ("1", "true", "yes", "on"),
}


def _pool_options(url: sa.URL) -> tuple[sa.URL, dict[str, Any]]:
    """The URL without its pool settings, and those settings as create_engine arguments."""
    given = {k: v for k, v in url.query.items() if k in _POOL_OPTIONS}
    options: dict[str, Any] = {}
    for key, value in given.items():
        text = value if isinstance(value, str) else value[-1]
        try:
            options[key] = _POOL_OPTIONS[key](text)
        except ValueError:
            raise ValueError(f"database URL option {key}={text!r} is not a number") from None
    return url.difference_update_query(given), options


class Store:
    def __init__(self, url: str) -> None:
        self.url = url
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("Store.open() was not called")
        return self._engine

    def open(self) -> Store:
        """Create the file's directory, connect, and create or upgrade the schema."""
        url, pool = _pool_options(sa.make_url(self.url))
        backend = url.get_backend_name()
        if backend == "sqlite" and url.database not in (None, "", ":memory:"):
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        if backend == "postgresql":
            # A connection the server closed (restart, idle timeout) is replaced on checkout
            # instead of failing the read or write that drew it.
            pool.setdefault("pool_pre_ping", True)
        engine = sa.create_engine(url, **pool)
        if backend == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        self._engine = engine
        try:
            self.migrate()
        except BaseException:
            # A refused schema leaves no pooled connection behind (psycopg warns of one
            # collected open).
            engine.dispose()
            self._engine = None
            raise
        return self

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()

    def version(self) -> int | None:
        if not sa.inspect(self.engine).has_table("schema_version"):
            return None
        with self.engine.connect() as c:
            return c.execute(sa.select(sa.func.max(schema_version.c.version))).scalar()

    def migrate(self) -> None:
        current = self.version()
        if current is not None and current > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"database schema version {current} is newer than this orchestratord "
                f"({SCHEMA_VERSION}); upgrade orchestratord"
            )
        with self.engine.begin() as c:
            if current is None:
                metadata.create_all(c)
                c.execute(schema_version.insert().values(version=SCHEMA_VERSION))
                return
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for table, ddl in _UPGRADES[version]:
                    c.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {ddl}"))
                c.execute(schema_version.delete())
                c.execute(schema_version.insert().values(version=version))
                log.info("database schema upgraded to version %d", version)
            for index in INDEXES:
                index.create(c, checkfirst=True)
            # Every table of `metadata` a database lacks, with its indexes: a table added
            # after a release needs no version bump (ORCH-341).
            metadata.create_all(c, checkfirst=True)

    # --- workers ---------------------------------------------------------------------------

    def load_workers(self) -> list[Worker]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(workers).where(workers.c.state != "deregistered")).all()
        return [
            Worker(
                id=r.id,
                url=r.url,
                model=r.model,
                backend=r.backend,
                pool=r.pool,
                slots_total=r.slots_total,
                n_ctx=r.n_ctx,
                reported="ready",
                last_heartbeat_ms=r.last_heartbeat_ms,
                registered_ms=r.registered_ms,
                dead=r.state == "dead",
                draining=r.state in ("draining", "drained"),  # a drain outlives a restart
            )
            for r in rows
        ]

    def save_workers(self, rows: Iterable[dict[str, Any]]) -> None:
        with self.engine.begin() as c:
            _upsert_many(c, workers, list(rows))

    def delete_worker(self, worker_id: str) -> None:
        with self.engine.begin() as c:
            c.execute(workers.delete().where(workers.c.id == worker_id))

    # --- tasks -----------------------------------------------------------------------------

    def save_tasks(self, records: Iterable[TaskRecord]) -> None:
        rows = [{k: getattr(r, k) for k in _TASK_COLUMNS} for r in records]
        with self.engine.begin() as c:
            _upsert_many(c, tasks, rows)

    def list_tasks(self, query: TaskQuery) -> list[TaskRecord]:
        """Records matching `query`, newest first (created_ms, then id), at most query.limit."""
        q = sa.select(tasks)
        if query.restricted:
            q = q.where(
                tasks.c.tenant.is_(None) if query.tenant is None else tasks.c.tenant == query.tenant
            )
        if query.status is not None:
            q = q.where(tasks.c.status == query.status)
        if query.model is not None:
            q = q.where(tasks.c.model == query.model)
        if query.since_ms is not None:
            q = q.where(tasks.c.created_ms >= query.since_ms)
        if query.before is not None:
            created, task_id = query.before
            q = q.where(
                sa.or_(
                    tasks.c.created_ms < created,
                    sa.and_(tasks.c.created_ms == created, tasks.c.id < task_id),
                )
            )
        q = q.order_by(tasks.c.created_ms.desc(), tasks.c.id.desc()).limit(query.limit)
        with self.engine.connect() as c:
            return [TaskRecord(**row._asdict()) for row in c.execute(q)]

    def get_task(self, task_id: str) -> TaskRecord | None:
        with self.engine.connect() as c:
            row = c.execute(sa.select(tasks).where(tasks.c.id == task_id)).first()
        if row is None:
            return None
        return TaskRecord(**row._asdict())

    def find_task(self, task_id: str, tenant: str | None) -> TaskRecord | None:
        """The task a caller of `tenant` means by `task_id` (ORCH-156): its tenant's task of
        that client-chosen id, else the task of that server-made id, whoever's it is (the
        caller checks that it may see it)."""
        own = sa.and_(
            tasks.c.client_id == task_id,
            tasks.c.tenant.is_(None) if tenant is None else tasks.c.tenant == tenant,
        )
        q = (
            sa.select(tasks)
            .where(sa.or_(own, tasks.c.id == task_id))
            .order_by(sa.case((own, 0), else_=1))
            .limit(1)
        )
        with self.engine.connect() as c:
            row = c.execute(q).first()
        return TaskRecord(**row._asdict()) if row is not None else None

    def prune_finished(self, before_ms: int) -> int:
        """Delete the records of tasks that finished before `before_ms`; returns how many."""
        with self.engine.begin() as c:
            result = c.execute(
                tasks.delete().where(
                    tasks.c.status.in_(("succeeded", "failed", "cancelled")),
                    tasks.c.finished_ms < before_ms,
                )
            )
            return int(result.rowcount)

    def fail_unfinished(self, now_ms: int) -> int:
        """At startup: tasks left queued or running by the previous run fail with WORKER_RESET."""
        with self.engine.begin() as c:
            result = c.execute(
                tasks.update()
                .where(tasks.c.status.in_(("queued", "running")))
                .values(
                    status="failed",
                    error_code="WORKER_RESET",
                    finished_ms=now_ms,
                    error_message="orchestratord restarted while the task was unfinished",
                )
            )
            return int(result.rowcount)

    # --- the fleet's desired state ---------------------------------------------------------

    def load_fleet(self) -> Any | None:
        """The stored desired state (decoded JSON, not yet validated), or None."""
        with self.engine.connect() as c:
            raw = c.execute(sa.select(fleet_spec.c.body).where(fleet_spec.c.id == 1)).scalar()
        return json.loads(raw) if raw is not None else None

    def save_fleet(self, body: Any, now_ms: int) -> None:
        row = {"id": 1, "body": json.dumps(body, separators=(",", ":")), "updated_ms": now_ms}
        with self.engine.begin() as c:
            _upsert_many(c, fleet_spec, [row])

    # --- compare runs ----------------------------------------------------------------------

    def save_compare_run(self, record: dict[str, Any]) -> None:
        row = {
            "id": record["id"],
            "created_ms": record["created_ms"],
            "tenant": record.get("tenant"),
            "model": record["model"],
            "status": record["status"],
            "record": json.dumps(record, separators=(",", ":")),
        }
        with self.engine.begin() as c:
            _upsert_many(c, compare_runs, [row])

    def get_compare_run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            raw = c.execute(
                sa.select(compare_runs.c.record).where(compare_runs.c.id == run_id)
            ).scalar()
        return json.loads(raw) if raw is not None else None

    def list_compare_runs(self, limit: int, tenant: str | None, everyone: bool) -> list[Any]:
        """Newest first; `everyone` (admin) lists all tenants, otherwise only `tenant`'s."""
        q = sa.select(compare_runs.c.record).order_by(
            compare_runs.c.created_ms.desc(), compare_runs.c.id.desc()
        )
        if not everyone:
            q = q.where(
                compare_runs.c.tenant.is_(None)
                if tenant is None
                else compare_runs.c.tenant == tenant
            )
        with self.engine.connect() as c:
            return [json.loads(r) for r in c.execute(q.limit(limit)).scalars()]

    # --- tenant limits and usage (ORCH-323, ORCH-326) ---------------------------------------

    def load_limits(self) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            return [r._asdict() for r in c.execute(sa.select(tenant_limits))]

    def save_limits(self, tenant: str, row: dict[str, Any] | None) -> None:
        """Set a tenant's limits (a row of tenant_limits' columns) or, with None, remove them."""
        with self.engine.begin() as c:
            c.execute(tenant_limits.delete().where(tenant_limits.c.tenant == tenant))
            if row is not None:
                c.execute(tenant_limits.insert().values(tenant=tenant, **row))

    def add_usage(self, rows: Iterable[tuple[tuple[Any, ...], Iterable[int]]]) -> None:
        """Add (hour_ms, tenant, key_id, model) -> counts to the hourly totals, one
        transaction. None tenant or key is stored as ''."""
        values = [
            {
                **dict(zip(_USAGE_KEY, (h, t or "", k or "", m), strict=True)),
                **dict(zip(_USAGE_COUNTS, counts, strict=True)),
            }
            for (h, t, k, m), counts in rows
        ]
        if not values:
            return
        with self.engine.begin() as c:
            _upsert_many(c, usage_hourly, values, add=_USAGE_COUNTS)  # counters (ORCH-342)

    def usage(
        self, since_ms: int, until_ms: int, tenant: str | None, restricted: bool
    ) -> list[tuple[tuple[int, str | None, str | None, str], list[int]]]:
        """Hourly rows with since_ms <= hour_ms < until_ms; `restricted`: `tenant`'s only."""
        q = sa.select(usage_hourly).where(
            usage_hourly.c.hour_ms >= since_ms, usage_hourly.c.hour_ms < until_ms
        )
        if restricted:
            q = q.where(usage_hourly.c.tenant == (tenant or ""))
        with self.engine.connect() as c:
            return [
                (
                    (r.hour_ms, r.tenant or None, r.key_id or None, r.model),
                    [int(getattr(r, n)) for n in _USAGE_COUNTS],
                )
                for r in c.execute(q)
            ]

    def spent(self, day_ms: int, month_ms: int) -> list[tuple[str | None, int, int]]:
        """(tenant, tokens since day_ms, tokens since month_ms): the budgets' restart point."""
        tokens = usage_hourly.c.prompt_tokens + usage_hourly.c.completion_tokens
        today = sa.func.sum(sa.case((usage_hourly.c.hour_ms >= day_ms, tokens), else_=0))
        q = (
            sa.select(usage_hourly.c.tenant, today, sa.func.sum(tokens))
            .where(usage_hourly.c.hour_ms >= month_ms)
            .group_by(usage_hourly.c.tenant)
        )
        with self.engine.connect() as c:
            return [(t or None, int(d or 0), int(m or 0)) for t, d, m in c.execute(q)]


def worker_row(w: Worker, state: str) -> dict[str, Any]:
    """The worker's row; a draining worker is stored as draining whatever it reports, so that
    orchestratord started again keeps it out of new work (FLT-031)."""
    if w.draining and state not in ("dead", "deregistered", "drained"):
        state = "draining"
    return {
        "id": w.id,
        "url": w.url,
        "model": w.model,
        "backend": w.backend,
        "pool": w.pool,
        "slots_total": w.slots_total,
        "state": state,
        "last_heartbeat_ms": w.last_heartbeat_ms,
        "n_ctx": w.n_ctx,
        "registered_ms": w.registered_ms,
    }


def _upsert_many(
    c: sa.Connection,
    table: sa.Table,
    rows: list[dict[str, Any]],
    add: tuple[str, ...] = (),
) -> None:
    """Insert rows, or update the row of the same primary key (ORCH-342): one executemany
    where the dialect has an upsert (SQLite, PostgreSQL), else an update, then an insert.

    The columns named in `add` are counters: a row that exists gains the new row's values
    (`n = n + excluded.n`), atomically on the database, whatever the isolation level. Each
    row gives every column of the table."""
    if not rows:
        return
    prepared = _prepared_upsert(c.dialect, table, add)
    if prepared is not None:
        sql, binds = prepared
        if c.dialect.positional:
            params: list[Any] = [
                tuple(row[k] if f is None else f(row[k]) for k, f in binds) for row in rows
            ]
        else:
            params = [{k: row[k] if f is None else f(row[k]) for k, f in binds} for row in rows]
        c.exec_driver_sql(sql, params)
        return
    key = list(table.primary_key.columns)
    for row in rows:
        match = sa.and_(*(col == row[col.name] for col in key))
        values = {k: table.c[k] + v if k in add else v for k, v in row.items()}
        if c.execute(table.update().where(match).values(values)).rowcount == 0:
            c.execute(table.insert().values(row))


Bind = tuple[str, Callable[[Any], Any] | None]


@functools.cache
def _prepared_upsert(
    dialect: sa.Dialect, table: sa.Table, add: tuple[str, ...] = ()
) -> tuple[str, list[Bind]] | None:
    """The upsert compiled once for the dialect, and its parameters in order, each with its
    type's conversion: executed on the driver, it skips the per-execution work of a statement
    (cache key, compiled-cache lookup, parameter processing), most of the writer's time for
    the few rows of a batch. The conversion is the dialect's own bind processor (None for
    the types psycopg and sqlite3 take as they are), so a value reaches either driver as
    SQLAlchemy would have sent it; psycopg's SQL carries the casts its dialect renders."""
    statement = _upsert(dialect.name, table, add)
    if statement is None:
        return None
    compiled = statement.compile(dialect=dialect)
    names = compiled.positiontup if compiled.positional else list(compiled.binds)
    assert names is not None
    binds: list[Bind] = [
        (n, table.c[n].type.dialect_impl(dialect).bind_processor(dialect)) for n in names
    ]
    return str(compiled), binds


@functools.cache
def _upsert(dialect: str, table: sa.Table, add: tuple[str, ...] = ()) -> sa.Insert | None:
    """The dialect's insert-or-update-by-primary-key statement for `table`, built once:
    building it (the `excluded` alias and its columns) cost more than the batched write
    itself. SQLite's and PostgreSQL's `ON CONFLICT` take the same form."""
    key = [col.name for col in table.primary_key.columns]
    if dialect == "sqlite":
        from sqlalchemy.dialects import sqlite

        lite = sqlite.insert(table)
        set_ = _conflict_set(table, key, lite.excluded, add)
        if not set_:
            return lite.on_conflict_do_nothing(index_elements=key)
        return lite.on_conflict_do_update(index_elements=key, set_=set_)
    if dialect == "postgresql":
        from sqlalchemy.dialects import postgresql

        pg = postgresql.insert(table)
        set_ = _conflict_set(table, key, pg.excluded, add)
        if not set_:
            return pg.on_conflict_do_nothing(index_elements=key)
        return pg.on_conflict_do_update(index_elements=key, set_=set_)
    return None


def _conflict_set(
    table: sa.Table, key: list[str], excluded: Any, add: tuple[str, ...]
) -> dict[str, Any]:
    """What an existing row's other columns become: the new row's values, or, for the
    counters in `add`, their sum with it."""
    return {
        col.name: col + excluded[col.name] if col.name in add else excluded[col.name]
        for col in table.columns
        if col.name not in key
    }


class BatchWriter:
    """Coalesce task and worker changes and write them in one transaction per interval.

    The token counts of running tasks change with every token and are no change of state:
    they are written with the next flush after `count_interval_s`, so that a record keeps
    about the tokens it sent when orchestratord dies (ORCH-065), at one write per interval
    however many tokens flow.
    """

    def __init__(
        self, store: Store, interval_s: float = 0.05, count_interval_s: float = 1.0
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.count_interval_s = count_interval_s
        self._tasks: dict[str, TaskRecord] = {}
        self._writing: dict[str, TaskRecord] = {}  # the batch the thread is writing now
        self._running: dict[str, TaskRecord] = {}  # whose tokens_out may move
        self._counted: dict[str, int] = {}  # the tokens_out last written of each
        self._workers: dict[str, dict[str, Any] | None] = {}  # None: delete
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    def task(self, record: TaskRecord) -> None:
        self._tasks[record.id] = record
        if record.status == "running":
            self._running[record.id] = record
        elif record.done:
            self._running.pop(record.id, None)
            self._counted.pop(record.id, None)
        self._wake.set()

    def pending(self, task_id: str, tenant: str | None) -> TaskRecord | None:
        """A record changed but not yet committed, as `Store.find_task` would find it once it
        is: a task evicted from memory right after it ended is read back from here, not as
        the database's older row."""
        for batch in (self._tasks, self._writing):
            own = [r for r in batch.values() if r.client_id == task_id and r.tenant == tenant]
            record = own[0] if own else batch.get(task_id)
            if record is not None:
                return record
        return None

    def worker(self, w: Worker, state: str) -> None:
        self._workers[w.id] = worker_row(w, state)
        self._wake.set()

    def delete_worker(self, worker_id: str) -> None:
        self._workers[worker_id] = None
        self._wake.set()

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="db-writer")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        counts_due = loop.time()
        while True:
            # With tasks running, wake for their token counts too, when nothing else does.
            wait = max(0.0, counts_due - loop.time()) if self._running else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._wake.wait()
            await asyncio.sleep(self.interval_s)
            self._wake.clear()
            counts = loop.time() >= counts_due
            if counts:
                counts_due = loop.time() + self.count_interval_s
            try:
                await self.flush(counts=counts)
            except Exception:
                log.exception("database write failed; will retry")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def flush(self, counts: bool = True) -> None:
        """Write what changed; with `counts`, also the running tasks whose token count moved."""
        # Snapshot values now: records keep changing on the loop while the thread writes.
        pending_tasks, pending_workers = self._tasks, self._workers
        self._tasks, self._workers = {}, {}
        if counts:
            for task_id, record in self._running.items():
                if self._counted.get(task_id, 0) != record.tokens_out:
                    self._counted[task_id] = record.tokens_out
                    pending_tasks.setdefault(task_id, record)
        if not pending_tasks and not pending_workers:
            return
        task_rows = [copy.copy(r) for r in pending_tasks.values()]
        self._writing = pending_tasks
        try:
            await asyncio.to_thread(self._write, task_rows, pending_workers)
        except Exception:
            # Keep what failed unless a newer change replaced it meanwhile.
            self._tasks = {**pending_tasks, **self._tasks}
            self._workers = {**pending_workers, **self._workers}
            raise
        finally:
            self._writing = {}

    def _write(
        self, task_rows: list[TaskRecord], worker_rows: dict[str, dict[str, Any] | None]
    ) -> None:
        upserts = [r for r in worker_rows.values() if r is not None]
        if upserts:
            self.store.save_workers(upserts)
        for worker_id, row in worker_rows.items():
            if row is None:
                self.store.delete_worker(worker_id)
        if task_rows:
            self.store.save_tasks(task_rows)

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self.flush()
