"""docs/deploy.md's PostgreSQL section run against a throwaway cluster (OPS-010), and the CI
set-up that makes the store tests run on PostgreSQL rather than skip (OPS-011)."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestratord.__main__ import main as orchestratord_main
from orchestratord.store.db import SCHEMA_VERSION, Store
from tests import stores, support
from tests.stores import PgCluster
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "deploy.md"


def section() -> str:
    return GUIDE.read_text().split("## 10. PostgreSQL", 1)[1]


def test_ops_010_the_guides_postgresql_steps_give_a_store_orchestratord_opens(
    pg_cluster: PgCluster,
) -> None:
    """OPS-010, ORCH-343: the guide's role and database are made by its own psql commands;
    its URL (this sandbox's host and port, no TLS) opens the store as that role, which owns
    the tables it created, with the guide's pool size."""
    [block] = re.findall(r"```sh\n(.*?)```", section(), re.S)
    for line in block.splitlines():
        argv = shlex.split(line)
        assert argv[:4] == ["sudo", "-u", "postgres", "psql"], line
        subprocess.run(
            [str(pg_cluster.bindir / "psql"), "-h", "127.0.0.1", "-p", str(pg_cluster.port),
             "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", *argv[4:]],
            check=True, capture_output=True,
        )  # fmt: skip
    [given] = re.findall(r"^LLORCH_DB_URL=(\S+)$", section(), re.M)
    url = sa.make_url(given)
    assert url.drivername == "postgresql+psycopg" and url.query["sslmode"] == "require"
    local = url.set(host="127.0.0.1", port=pg_cluster.port).difference_update_query(["sslmode"])
    store = Store(local.render_as_string(hide_password=False)).open()
    try:
        assert store.version() == SCHEMA_VERSION
        pool = store.engine.pool
        assert isinstance(pool, sa.QueuePool) and pool.size() == int(str(url.query["pool_size"]))
        with store.engine.connect() as c:
            owners = c.execute(sa.text("SELECT DISTINCT tableowner FROM pg_tables "
                                       "WHERE schemaname = 'public'")).scalars().all()  # fmt: skip
        assert owners == [url.username]
    finally:
        store.close()


def test_ops_010_a_database_orchestratord_cannot_reach_stops_it_with_status_2(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """OPS-010: no server at the URL: one line on stderr and exit status 2, before listening."""
    url = f"postgresql+psycopg://llorch@127.0.0.1:{free_port()}/llorch"
    assert orchestratord_main(["--db-url", url, "--port", str(free_port())]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "127.0.0.1" in err


def test_ops_011_ci_installs_postgresql_and_strict_mode_fails_without_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OPS-011: .ci/run installs Debian's postgresql where its server is missing; without a
    server the PostgreSQL half of a store test skips, and fails under LLORCH_TEST_STRICT=1."""
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"need\+=\(postgresql\)", ci) and "/usr/lib/postgresql/" in ci
    assert stores.required_bindir() == stores.find_bindir()  # here: found
    monkeypatch.setenv("LLORCH_PG_BINDIR", str(tmp_path))  # a directory without the server
    monkeypatch.setattr(support, "STRICT", False)
    with pytest.raises(pytest.skip.Exception, match="apt-get install postgresql"):
        stores.required_bindir()
    monkeypatch.setattr(support, "STRICT", True)
    with pytest.raises(pytest.fail.Exception, match="LLORCH_TEST_STRICT=1"):
        stores.required_bindir()
