"""`python -m orchestratord` / `orchestratord`: run the daemon under uvicorn, or a command of
its command line (`orchestratord replay`, orchestratord/cli.py).

Failures at start (bad flags, an invalid policy, an unusable database) and of a command are one
line on stderr and exit status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import os
import socket
import sys
import traceback
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette
from typer._click.exceptions import UsageError
from typer.exceptions import Abort

from orchestratord import cli
from orchestratord.settings import Settings
from shared.cli import fail_line
from shared.logs import configure as configure_logs


class _Server(uvicorn.Server):
    """Ends the tasks first when shutting down, so open event streams close with an `error`
    event instead of being cut while uvicorn waits for connections to finish."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self.app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        service = getattr(self.app.state, "service", None)
        if service is not None:
            await service.stop()
        await super().shutdown(sockets)


def _driver_hint(e: ModuleNotFoundError, url: str) -> str:
    scheme = url.split(":", 1)[0]
    package = DRIVERS.get(e.name or "", e.name or "the driver")
    return (
        f"--db-url {scheme}://...: its database driver is not installed (no module "
        f"{e.name!r}); install it with 'pip install {package}'"
    )


# SQLAlchemy's default drivers and the distributions that provide them.
DRIVERS = {
    "psycopg2": "psycopg2-binary",
    "psycopg": "psycopg[binary]",
    "pymysql": "pymysql",
    "MySQLdb": "mysqlclient",
    "asyncpg": "asyncpg",
    "oracledb": "oracledb",
    "pyodbc": "pyodbc",
}


def _listen(settings: Settings) -> socket.socket:
    """Bind before anything starts, so a port in use is one line, not a uvicorn traceback."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {e.strerror}") from e
    return sock


class StartupError(Exception):
    """A start-up failure that is the operator's to fix; its message is the one line."""


def _prepare(args: list[str]) -> tuple[Settings, socket.socket] | int:
    """Everything that can fail before serving: flags, policy, database, the port."""
    parsed = cli.from_args(args, os.environ)
    if isinstance(parsed, int):
        return parsed  # --help or --version answered
    from orchestratord.fleet.desired import load_fleet_file
    from orchestratord.policy import PolicyEngine
    from orchestratord.store.db import Store

    # Fail before listening: a bad policy file (its admit, schedule and plan) or database is
    # the operator's to fix.
    PolicyEngine.from_file(parsed.policy, budget_ms=parsed.policy_budget_ms)
    if parsed.fleet is not None:
        load_fleet_file(parsed.fleet)
    try:
        Store(parsed.database_url).open().close()
    except ModuleNotFoundError as e:
        raise StartupError(_driver_hint(e, parsed.database_url)) from e
    return parsed, _listen(parsed)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        prepared = _prepare(args)
    except (Abort, KeyboardInterrupt):  # Ctrl-C during a long replay
        fail_line(cli.PROG, "interrupted")
        return 130
    except UsageError as e:
        path = e.ctx.command_path if e.ctx else cli.PROG
        fail_line(cli.PROG, f"{e.format_message().rstrip('.')}; run '{path} --help'")
        return 2
    except Exception as e:
        if "--debug" in args:
            traceback.print_exc()
        detail = getattr(e, "detail", None) or str(e) or type(e).__name__
        fail_line(cli.PROG, " ".join(str(detail).split()))
        return 2
    if isinstance(prepared, int):
        return prepared
    settings, sock = prepared
    from orchestratord.app import create_app

    configure_logs(settings.log_level, settings.log_format)
    app = create_app(settings, handle_sighup=True)
    config = uvicorn.Config(
        app,
        log_level=settings.log_level,
        log_config=None,  # logs.configure set the handlers (text or JSON)
        access_log=False,
        lifespan="on",
        # Streams of queued tasks would otherwise hold shutdown until they end.
        timeout_graceful_shutdown=5,
    )
    _Server(config, app).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
