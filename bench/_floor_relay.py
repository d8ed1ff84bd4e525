"""The least a relay can be in orchestratord's stack: the floor path of bench/relay.py.

    python -m bench._floor_relay --port PORT --worker URL [--worker URL ...] --token TOKEN
        [--work-us N]

The same parts as orchestratord's relay (uvicorn, starlette, `shared.sse.EventStream`, the
keep-alive worker client of `orchestratord.worker_client.http1`) and nothing else: no keys,
validation, policy, queue, records or task log. POST /v2/tasks takes a task body, sends it to
the next worker round-robin as POST /execute, and passes the worker's SSE bytes through as
they come. What it adds over going to the workers directly is what the stack costs on this
machine; what orchestratord adds beyond it is orchestratord's own work.

`--work-us N` makes it spin N microseconds of CPU per task before passing the task on: a
stand-in for a relay's own per-task work (keys, validation, policy, records), so that the
added TTFT can be read as a function of it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from orchestratord.worker_client.http1 import ConnectionPool, post
from shared.sse import EventStream


def spin(seconds: float) -> None:
    """Use `seconds` of this thread's CPU."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def create_app(workers: list[str], token: str, work_us: float = 0.0) -> Starlette:
    urls = itertools.cycle([w.rstrip("/") + "/execute" for w in workers])
    headers = {"authorization": f"Bearer {token}"}
    pool = ConnectionPool()

    async def relay(request: Request) -> Response:
        body = json.loads(await request.body())
        if work_us:
            spin(work_us / 1e6)
        body.pop("model", None)
        pieces: asyncio.Queue[bytes | None] = asyncio.Queue()

        def on_body(piece: bytes) -> bool:
            pieces.put_nowait(piece)
            return False

        async def exchange() -> None:
            try:
                await post(
                    next(urls),
                    body,
                    headers,
                    on_body,
                    connect_timeout=3.0,
                    read_timeout=60.0,
                    pool=pool,
                )
            finally:
                pieces.put_nowait(None)

        async def stream() -> AsyncIterator[bytes]:
            task = asyncio.create_task(exchange())
            try:
                while (piece := await pieces.get()) is not None:
                    yield piece
                await task
            finally:
                task.cancel()

        return EventStream(stream())

    async def health(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(routes=[Route("/v2/tasks", relay, methods=["POST"]), Route("/health", health)])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--worker", action="append", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--work-us", type=float, default=0.0, help="CPU to spend per task")
    args = p.parse_args()
    app = create_app(args.worker, args.token, args.work_us)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
