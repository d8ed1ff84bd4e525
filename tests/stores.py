"""Store back-ends for tests and benches: SQLite file URLs, and a throwaway PostgreSQL cluster.

`PgCluster` runs Debian's (or any) PostgreSQL server binaries: `initdb` in a fresh directory,
a free loopback port, the unix socket in that directory, `pg_ctl start -w`; `stop()` stops it
and removes the directory. PostgreSQL refuses to run as root, so under root (CI) the cluster's
directory and processes belong to the `postgres` user, or `nobody` where there is none.

The test suite's `pg_cluster` and `store_url` fixtures (tests/conftest.py) and
`bench/load.py --postgres` both use it.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from tests.support import free_port, require

# The superuser is named as on a packaged server, so a test can run the deploy guide's
# `CREATE ROLE llorch ...` as written.
SUPERUSER = "postgres"
BACKENDS = ("sqlite", "postgresql")
# Durability a throwaway test cluster does not need: no fsync, so CREATE DATABASE and commits
# cost memory copies, not disk flushes.
FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")


def find_bindir() -> Path | None:
    """The directory of PostgreSQL's server binaries (initdb, pg_ctl, postgres):
    $LLORCH_PG_BINDIR when set (and only it), else `pg_config --bindir`, the PATH, or
    Debian's /usr/lib/postgresql/<version>/bin (not on the PATH there), newest first."""
    candidates: list[Path] = []
    if os.environ.get("LLORCH_PG_BINDIR"):
        return _server_bindir(Path(os.environ["LLORCH_PG_BINDIR"]))
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True
            ).stdout
            candidates.append(Path(out.strip()))
    initdb = shutil.which("initdb")
    if initdb is not None:
        candidates.append(Path(initdb).resolve().parent)
    versions = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += [Path(p) for p in sorted(versions, key=_version, reverse=True)]
    for bindir in candidates:
        if _server_bindir(bindir) is not None:
            return bindir
    return None


def required_bindir() -> Path:
    """The server's bindir; where it or psycopg is missing, skips the test, or fails it with
    LLORCH_TEST_STRICT=1 (CI, which installs both)."""
    bindir = find_bindir()
    require(
        bindir is not None,
        "PostgreSQL's server binaries (initdb, pg_ctl) are missing: apt-get install postgresql",
    )
    assert bindir is not None
    try:
        import psycopg  # noqa: F401
    except ImportError:
        require(False, "psycopg is not installed: pip install 'psycopg[binary]'")
    return bindir


def _server_bindir(bindir: Path) -> Path | None:
    """`bindir` if it holds the server (pg_config may come from libpq-dev alone)."""
    ok = all(os.access(bindir / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres"))
    return bindir if ok else None


def _version(path: str) -> tuple[int, ...]:
    name = Path(path).parent.name
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account the server runs as when we are root (None: as ourselves)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise RuntimeError("running as root and neither a postgres nor a nobody account exists")


class PgCluster:
    """One PostgreSQL server in a temporary directory, on 127.0.0.1:`port`."""

    def __init__(self, bindir: Path, settings: tuple[str, ...] = FAST) -> None:
        self.bindir = bindir
        self.settings = settings
        self.user = _run_as()
        self.dir = Path(tempfile.mkdtemp(prefix="llorch-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "server.log"
        self.port = 0
        self._names = itertools.count(1)

    def _cmd(self, *args: str) -> None:
        kw: dict[str, Any] = {}
        if self.user is not None:
            kw = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
        done = subprocess.run(
            list(args), cwd=self.dir, capture_output=True, text=True, check=False, **kw
        )
        if done.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(
                f"{Path(args[0]).name} failed ({done.returncode}): "
                f"{done.stderr.strip() or done.stdout.strip()}\n{log}"
            )

    def start(self) -> PgCluster:
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self.dir.chmod(0o700)
        self._cmd(
            str(self.bindir / "initdb"),
            "-D", str(self.data),
            "-U", SUPERUSER,
            "--auth=trust",
            "--encoding=UTF8",
            "--no-locale",
            "--no-sync",
        )  # fmt: skip
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.dir}",
            "-c max_connections=200",
            *(f"-c {s}" for s in self.settings),
        ]
        # A port taken between free_port and the server's bind: try another.
        for attempt in range(3):
            self.port = free_port()
            try:
                self._cmd(
                    str(self.bindir / "pg_ctl"),
                    "start", "-w", "-t", "60",
                    "-D", str(self.data),
                    "-l", str(self.log),
                    "-o", " ".join([f"-p {self.port}", *options]),
                )  # fmt: skip
                return self
            except RuntimeError:
                if attempt == 2:
                    self.stop()
                    raise
        return self

    def stop(self) -> None:
        """Stop the server (immediately: nothing in it is kept) and remove its directory."""
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(RuntimeError):
                self._cmd(str(self.bindir / "pg_ctl"), "stop", "-D", str(self.data), "-m", "i")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new empty database (a copy of template1, fast); returns its SQLAlchemy URL."""
        name = f"t{next(self._names)}"
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as c:
                c.exec_driver_sql(f"CREATE DATABASE {name}")
        finally:
            engine.dispose()
        return self.url(name)


@contextlib.contextmanager
def pg_cluster(bindir: Path, settings: tuple[str, ...] = FAST) -> Iterator[PgCluster]:
    cluster = PgCluster(bindir, settings)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def backend(url: str) -> str:
    """'sqlite' or 'postgresql'."""
    return sa.make_url(url).get_backend_name()


def run_sql(url: str, script: str) -> None:
    """Run `;`-separated SQL statements in one transaction (an older schema a test starts
    from); the statements must be valid on the URL's database."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as c:
            for statement in script.split(";"):
                if statement.strip():
                    c.exec_driver_sql(statement)
    finally:
        engine.dispose()
