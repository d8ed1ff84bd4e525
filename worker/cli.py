"""`llorch-workerd`: serve one GGUF model over HTTP.

Flags also read environment variables: the worker's own as `LLORCH_WORKER_*`, the fleet-wide
ones by their fleet-wide names (`LLORCH_CLUSTER_TOKEN`, `LLORCH_ORCHESTRATOR_URL`; see the
glossary in README.md). Every start-up failure is one line on stderr and exit status 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer
import uvicorn
from starlette.applications import Starlette

from shared.cli import fail_line, run_typer
from shared.logs import configure as configure_logs
from shared.version import version_option
from worker.app import create_app
from worker.engine import LlamaEngine, gpu_offload_supported
from worker.settings import SettingsError, WorkerSettings

PROG = "llorch-workerd"
cli = typer.Typer(name=PROG, pretty_exceptions_enable=False, rich_markup_mode=None)
_ENV = "LLORCH_WORKER_"


def _opt(help: str, env: str) -> typer.models.OptionInfo:
    return typer.Option(help=help, envvar=_ENV + env)  # type: ignore[no-any-return]


@cli.command()
def serve(
    model: Annotated[Path, _opt("GGUF model file to serve", "MODEL")],
    model_name: Annotated[
        str,
        _opt(
            "Model id tasks use [default: the file name in lower case, without .gguf]", "MODEL_NAME"
        ),
    ] = "",
    backend: Annotated[str, _opt("cpu, cuda or metal", "BACKEND")] = "cpu",
    host: Annotated[str, _opt("Address to listen on", "HOST")] = "127.0.0.1",
    port: Annotated[int, _opt("Port to listen on", "PORT")] = 8001,
    slots: Annotated[int, _opt("Generations that run at once", "SLOTS")] = 1,
    max_queue: Annotated[
        int, _opt("Requests that may wait for a slot; more get 503", "MAX_QUEUE")
    ] = 8,
    n_ctx: Annotated[int, _opt("Context length per slot, in tokens", "N_CTX")] = 4096,
    threads: Annotated[
        int, _opt("CPU threads of the decode loop [default: the physical cores]", "THREADS")
    ] = 0,
    prefill_chunk: Annotated[
        int,
        _opt(
            "Prompt tokens decoded per step at most (running streams wait at most one chunk)",
            "PREFILL_CHUNK",
        ),
    ] = 512,
    kv_block: Annotated[
        int, _opt("Tokens per block of the KV cache report to orchestratord", "KV_BLOCK")
    ] = 64,
    cache_ram_mib: Annotated[
        int,
        _opt(
            "Host RAM (MiB) keeping the KV state of sequences new jobs overwrote (0: off)",
            "CACHE_RAM_MIB",
        ),
    ] = 256,
    cluster_token: Annotated[
        str,
        typer.Option(
            envvar="LLORCH_CLUSTER_TOKEN",
            help="The cluster token: required on every endpoint but /health, and presented to "
            "orchestratord",
            show_default=False,
        ),
    ] = "",
    orchestrator_url: Annotated[
        str,
        typer.Option(
            envvar="LLORCH_ORCHESTRATOR_URL", help="Register with the orchestratord at this URL"
        ),
    ] = "",
    worker_id: Annotated[str, _opt("Worker id [default: generated]", "WORKER_ID")] = "",
    pool: Annotated[
        str, _opt("Pool name reported to orchestratord [default: hostname]", "POOL")
    ] = "",
    advertise_url: Annotated[
        str,
        _opt(
            "URL orchestratord uses to reach this worker [default: http://HOST:PORT]",
            "ADVERTISE_URL",
        ),
    ] = "",
    heartbeat_interval: Annotated[
        float, _opt("Seconds between heartbeats", "HEARTBEAT_INTERVAL")
    ] = 2.0,
    log_format: Annotated[str, _opt("text, or json (one object per line)", "LOG_FORMAT")] = "text",
    verbose: Annotated[bool, typer.Option("--verbose", help="Log llama.cpp's messages")] = False,
    listen_fd: Annotated[
        int | None,
        # llorch-pool binds the port itself and hands the listening socket over, so no other
        # process can take the port between its choice and the worker's start.
        typer.Option(hidden=True, help="Serve on this inherited listening socket"),
    ] = None,
    version: Annotated[bool, version_option(PROG)] = False,
) -> None:
    """Serve one GGUF model: POST /execute streams tokens as server-sent events."""
    if log_format not in ("text", "json"):
        _fail(f"--log-format must be text or json, not {log_format!r}")
    configure_logs("info", log_format)
    logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if verbose else logging.ERROR)
    if backend not in ("cpu", "cuda", "metal"):
        _fail(f"--backend must be cpu, cuda or metal, not {backend!r}")
    if backend != "cpu" and not gpu_offload_supported():
        _fail(
            f"--backend {backend}: this llama-cpp-python build has no GPU offload; reinstall it "
            f"with CMAKE_ARGS=-DGGML_{backend.upper()}=on or use --backend cpu"
        )
    if not model.is_file():
        _fail(f"model file not found: {model}")
    extra = {"worker_id": worker_id} if worker_id else {}
    if pool:
        extra["pool"] = pool
    try:
        settings = WorkerSettings(
            model=model,
            model_name=model_name,
            backend=backend,  # type: ignore[arg-type]
            host=host,
            port=port,
            slots=slots,
            max_queue=max_queue,
            n_ctx=n_ctx,
            threads=threads or None,
            prefill_chunk=prefill_chunk,
            kv_block=kv_block,
            cache_ram_mib=cache_ram_mib,
            token=cluster_token or None,
            orchestrator_url=orchestrator_url or None,
            advertise_url=advertise_url or None,
            heartbeat_interval=heartbeat_interval,
            **extra,
        )
    except SettingsError as e:
        _fail(str(e))
    sock = _listen(settings, listen_fd)
    # With --port 0 the kernel chose the port: the worker advertises the real one.
    settings = dataclasses.replace(settings, port=int(sock.getsockname()[1]))
    sys.exit(run(settings, sock))


def _listen(settings: WorkerSettings, fd: int | None) -> socket.socket:
    """The listening socket, bound before anything else starts: a port in use is one line."""
    if fd is not None:
        try:
            return socket.socket(fileno=fd)
        except OSError as e:
            _fail(f"--listen-fd {fd} is not a socket: {e.strerror}")
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((settings.host, settings.port))
        sock.listen(2048)
    except OSError as e:
        sock.close()
        _fail(f"cannot listen on {settings.host}:{settings.port}: {e.strerror}")
    return sock


def run(settings: WorkerSettings, sock: socket.socket | None = None) -> int:
    """Run the server until shutdown (on `sock` when given); returns the process exit code."""
    exit_code = 0

    def load(s: WorkerSettings) -> LlamaEngine:
        return LlamaEngine.load(
            s.model,
            backend=s.backend,
            n_ctx=s.n_ctx,
            slots=s.slots,
            threads=s.threads,
            chunk=s.prefill_chunk,
            block_size=s.kv_block,
            cache_ram=s.cache_ram_mib << 20,
        )

    def exit_hook(code: int) -> None:
        nonlocal exit_code
        exit_code = code
        server.should_exit = True

    app = create_app(settings, load_engine=load, exit_hook=exit_hook)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    server = _Server(config, app)
    server.run(sockets=[sock] if sock is not None else None)
    return exit_code


class _Server(uvicorn.Server):
    """uvicorn's server, which also ends the running jobs when a signal stops it (WRK-005)."""

    def __init__(self, config: uvicorn.Config, app: Starlette) -> None:
        super().__init__(config)
        self._app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        stop_jobs = getattr(self._app.state, "stop_jobs", None)
        if stop_jobs is None:
            return
        # A signal handler may interrupt the event loop anywhere: the jobs are ended from the
        # loop's next iteration, not from inside the handler.
        with contextlib.suppress(RuntimeError):  # no loop running (yet): nothing streams
            asyncio.get_running_loop().call_soon_threadsafe(stop_jobs)


def _fail(message: str) -> NoReturn:
    fail_line(PROG, message)
    raise typer.Exit(2)


def main(argv: list[str] | None = None) -> None:
    sys.exit(run_typer(cli, PROG, sys.argv[1:] if argv is None else argv))
