"""`llorch-workerd`: serve one GGUF model over HTTP. Flags also read LLORCH_WORKER_* variables."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from worker.app import create_app
from worker.engine import LlamaEngine, gpu_offload_supported
from worker.settings import SettingsError, WorkerSettings

cli = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
_ENV = "LLORCH_WORKER_"


def _opt(help: str, env: str) -> typer.models.OptionInfo:
    return typer.Option(help=help, envvar=_ENV + env)  # type: ignore[no-any-return]


@cli.command()
def serve(
    model: Annotated[Path, _opt("GGUF model file to serve", "MODEL")],
    model_name: Annotated[
        str, _opt("Name tasks use for this model [default: file stem]", "MODEL_NAME")
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
        int, _opt("CPU threads of the decode loop [default: half the cores]", "THREADS")
    ] = 0,
    prefill_chunk: Annotated[
        int,
        _opt(
            "Prompt tokens decoded per step at most (running streams wait at most one chunk)",
            "PREFILL_CHUNK",
        ),
    ] = 512,
    token: Annotated[
        str,
        _opt(
            "Bearer token required on every endpoint but /health; also presented to orchestratord",
            "TOKEN",
        ),
    ] = "",
    orchestrator_url: Annotated[
        str, _opt("Register with this orchestratord", "ORCHESTRATOR_URL")
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
    verbose: Annotated[bool, typer.Option("--verbose", help="Log llama.cpp's messages")] = False,
) -> None:
    """Serve one GGUF model: POST /execute streams tokens as server-sent events."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if verbose else logging.ERROR)
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat otherwise
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
            token=token or None,
            orchestrator_url=orchestrator_url or None,
            advertise_url=advertise_url or None,
            heartbeat_interval=heartbeat_interval,
            **extra,
        )
    except SettingsError as e:
        _fail(str(e))
    sys.exit(run(settings))


def run(settings: WorkerSettings) -> int:
    """Run the server until shutdown; returns the process exit code."""
    exit_code = 0

    def load(s: WorkerSettings) -> LlamaEngine:
        return LlamaEngine.load(
            s.model,
            backend=s.backend,
            n_ctx=s.n_ctx,
            slots=s.slots,
            threads=s.threads,
            chunk=s.prefill_chunk,
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
    server = uvicorn.Server(config)
    server.run()
    return exit_code


def _fail(message: str) -> None:
    typer.echo(f"llorch-workerd: {message}", err=True)
    raise typer.Exit(2)


def main() -> None:
    cli()
