"""`python -m orchestratord` / `orchestratord`: run the daemon under uvicorn.

Failures at start (bad flags, an invalid policy, an unusable database) are one line on stderr
and exit status 2; `--debug` shows the traceback.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Sequence

import uvicorn
from starlette.applications import Starlette

from orchestratord.settings import from_args


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


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["replay"]:
        from orchestratord.replay.cli import main as replay_main

        return replay_main(args[1:])
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        settings = from_args(args)
        from orchestratord.app import create_app
        from orchestratord.policy import PolicyEngine
        from orchestratord.store.db import Store

        # Fail before listening: a bad policy file or database is the operator's to fix.
        PolicyEngine.from_file(settings.policy, budget_ms=settings.policy_budget_ms)
        from orchestratord.fleet.desired import load_fleet_file
        from orchestratord.fleet.plan_hook import PlanHook

        PlanHook.from_file(settings.policy, budget_ms=settings.policy_budget_ms)
        if settings.fleet is not None:
            load_fleet_file(settings.fleet)
        Store(settings.database_url).open().close()
    except Exception as e:
        if debug:
            raise
        detail = getattr(e, "detail", None) or str(e) or type(e).__name__
        print(f"orchestratord: {detail}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per cancel otherwise
    app = create_app(settings, handle_sighup=True)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        lifespan="on",
        # Streams of queued tasks would otherwise hold shutdown until they end.
        timeout_graceful_shutdown=5,
    )
    _Server(config, app).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
