"""`llorch-pool`: manage models, backends and workers on this pool host.

Every failure ends as one line on stderr ("llorch-pool: error: what failed; what to do") and an
exit code of its own (specs/pool.md); --debug adds the traceback. --json prints machine-readable
output on stdout for scripts (the operator CLI runs this over SSH); progress goes to stderr.
"""

from __future__ import annotations

import os
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from pool_ctl import backends as backends_mod
from pool_ctl import models as models_mod
from pool_ctl import render
from pool_ctl import spawn as spawn_mod
from pool_ctl import workers as workers_mod
from pool_ctl.catalog import Catalog
from pool_ctl.errors import IntegrityError, InvalidInput, PoolError
from pool_ctl.gguf_meta import kv_bytes_per_token
from pool_ctl.records import WorkerRecord, check_pool_name, public
from pool_ctl.settings import Settings
from shared.cli import fail_line, run_typer
from shared.cpus import physical_cores
from shared.version import version_option

PROG = "llorch-pool"

app = typer.Typer(
    name=PROG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="Manage models, backends and llorch-workerd processes on this pool host.",
)
models_app = typer.Typer(
    no_args_is_help=True, help="Download, import, list, verify, remove models."
)
worker_app = typer.Typer(no_args_is_help=True, help="Spawn, list, stop and clean up workers.")
app.add_typer(models_app, name="models")
app.add_typer(worker_app, name="worker")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout, for scripts.")]


@app.callback()
def root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(envvar="LLORCH_HOME", help="State directory [default: ~/.local/share/llorch]"),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", envvar="LLORCH_DEBUG", help="Show tracebacks on failure.")
    ] = False,
    version: Annotated[bool, version_option(PROG)] = False,
) -> None:
    ctx.obj = Settings.build(home, debug=debug)


def _settings(ctx: typer.Context) -> Settings:
    settings: Settings = ctx.obj
    return settings


# ---- models -------------------------------------------------------------------------------


@models_app.command("download")
def models_download(
    ctx: typer.Context,
    ref: Annotated[str, typer.Argument(help="REPO:FILE.gguf or REPO:QUANT (REPO@REVISION too)")],
    model_id: Annotated[
        str | None, typer.Option("--id", help="Catalog id [default: the file's stem]")
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace an entry with the same id.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Download a GGUF from the Hugging Face hub into the catalog. The hub is HF_ENDPOINT,
    with HF_TOKEN."""
    entry = models_mod.download(_settings(ctx), ref, model_id=model_id, force=force)
    render.print_json(entry) if as_json else typer.echo(f"downloaded {render.model_line(entry)}")


@models_app.command("import")
def models_import(
    ctx: typer.Context,
    path: Annotated[Path, typer.Argument(help="A local .gguf file")],
    model_id: Annotated[
        str | None, typer.Option("--id", help="Catalog id [default: the file's stem]")
    ] = None,
    copy: Annotated[
        bool, typer.Option(help="Copy the file under models/ instead of using it in place.")
    ] = False,
    force: Annotated[bool, typer.Option(help="Replace an entry with the same id.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a local GGUF file to the catalog."""
    entry = models_mod.import_file(_settings(ctx), path, model_id=model_id, copy=copy, force=force)
    render.print_json(entry) if as_json else typer.echo(f"imported {render.model_line(entry)}")


@models_app.command("list")
def models_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List the models in the catalog."""
    entries = sorted(Catalog(_settings(ctx).layout.catalog).load().values(), key=lambda e: e["id"])
    if as_json:
        render.print_json({"models": entries})
        return
    if not entries:
        typer.echo("no models; add one with 'llorch-pool models download REF'")
        return
    rows = [["ID", "ARCH", "PARAMS", "QUANT", "CTX", "SIZE", "TEMPLATE", "SOURCE"]]
    for e in entries:
        source = f"{e['repo']}:{e['filename']}" if e["repo"] else e["path"]
        rows.append(
            [
                e["id"],
                e["architecture"] or "?",
                render.human_count(e["parameter_count"]),
                e["quantization"] or "?",
                str(e["context_length"] or "?"),
                render.human_size(e["size_bytes"]),
                e["chat_template"],
                source,
            ]
        )
    render.table(rows)


@models_app.command("rm")
def models_rm(
    ctx: typer.Context,
    model_id: Annotated[str, typer.Argument(help="Catalog id")],
    force: Annotated[bool, typer.Option(help="Remove even while workers use it.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Remove a model from the catalog. Its file goes too when it lives under models/."""
    gone = models_mod.remove(_settings(ctx), model_id, force=force)
    if as_json:
        render.print_json(
            {"removed": model_id, "path": gone.entry["path"], "deleted_file": gone.deleted_file}
        )
    else:
        what = "deleted" if gone.deleted_file else "kept (outside models/)"
        typer.echo(f"removed {model_id}; file {gone.entry['path']} {what}")


@models_app.command("verify")
def models_verify(
    ctx: typer.Context,
    model_id: Annotated[str | None, typer.Argument(help="Catalog id [default: all]")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Check model files against the catalog. Each must be there, of its size and sha256,
    and a readable GGUF."""
    checks = models_mod.verify(_settings(ctx), model_id)
    if as_json:
        render.print_json({"results": [c.__dict__ for c in checks]})
    else:
        for c in checks:
            typer.echo(f"ok      {c.id}" if c.ok else f"FAILED  {c.id}: {c.problem}")
    failed = [c.id for c in checks if not c.ok]
    if failed:
        raise IntegrityError(
            f"{len(failed)} model(s) failed verification: {', '.join(failed)}",
            "download or import them again",
        )


# ---- backends -----------------------------------------------------------------------------


@app.command("backends")
def backends_cmd(
    ctx: typer.Context,
    as_json: JsonOpt = False,
    memory_only: Annotated[
        bool,
        typer.Option(
            "--memory",
            help="Only the memory and the catalog models' sizes (no backend detection: fast; "
            "what `llorch fleet apply` asks before it places a replica). Not saved.",
        ),
    ] = False,
) -> None:
    """Detect the backends this host can run: cpu, cuda, metal.

    Saved in backends.json, with the host's free RAM (and VRAM) and what each catalog model
    needs."""
    layout = _settings(ctx).layout
    models: dict[str, backends_mod.ModelSize] = {
        e["id"]: {
            "size_bytes": e["size_bytes"],
            "kv_bytes_per_token": kv_bytes_per_token(Path(e["path"])),
            "context_length": e["context_length"],
        }
        for e in Catalog(layout.catalog).load().values()
    }
    if memory_only:
        render.print_json({"memory": backends_mod.probe_memory(), "models": models})
        return
    report = backends_mod.detect_and_save(layout.backends, models=models)
    if as_json:
        render.print_json(report)
        return
    found = report["backends"]
    rows = [["BACKEND", "AVAILABLE", "WHY"]]
    rows += [[b["name"], "yes" if b["available"] else "no", b["reason"]] for b in found]
    render.table(rows)
    mem = report["memory"]
    typer.echo(
        f"RAM: {render.human_size(mem['ram_free_bytes'])} free of "
        f"{render.human_size(mem['ram_total_bytes'])}"
    )
    if mem["vram_total_bytes"] is not None and mem["vram_free_bytes"] is not None:
        typer.echo(
            f"VRAM: {render.human_size(mem['vram_free_bytes'])} free of "
            f"{render.human_size(mem['vram_total_bytes'])}"
        )


# ---- workers ------------------------------------------------------------------------------


def _parse_port(value: str) -> int | None:
    if value == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise InvalidInput(f"--port {value!r} is not a number", "give a port or 'auto'") from None


def _shown(
    record: WorkerRecord, state: str, health: dict[str, Any] | None, registry: str | None = None
) -> dict[str, Any]:
    out = public(record)
    out["state"] = state
    out["health"] = health
    out["registry_state"] = registry
    return out


@worker_app.command("spawn")
def worker_spawn(
    ctx: typer.Context,
    backend: Annotated[str, typer.Argument(help="cpu, cuda or metal")],
    model: Annotated[str, typer.Option("--model", help="Catalog id of the model to serve")],
    port: Annotated[str, typer.Option(help="Port, or 'auto': the first free from 8001")] = "auto",
    host: Annotated[str, typer.Option(help="Address the worker listens on")] = "127.0.0.1",
    slots: Annotated[int, typer.Option(help="Generations that run at once")] = 1,
    n_ctx: Annotated[
        int | None,
        typer.Option("--n-ctx", help="Context length per slot, in tokens [default: the worker's]"),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            help="CPU threads of the worker's decode loop [default: the host's physical cores "
            "divided among the running workers and this one]",
            show_default=False,
        ),
    ] = None,
    max_queue: Annotated[
        int | None,
        typer.Option(
            "--max-queue",
            help="Requests that may wait for a slot [default: the worker's]",
            show_default=False,
        ),
    ] = None,
    orchestrator_url: Annotated[
        str | None,
        typer.Option(
            envvar="LLORCH_ORCHESTRATOR_URL",
            help="Register the worker with the orchestratord at this URL",
            show_default=False,
        ),
    ] = None,
    cluster_token: Annotated[
        str | None,
        typer.Option(
            envvar="LLORCH_CLUSTER_TOKEN",
            help="The cluster token (needed with --orchestrator-url or a non-loopback --host)",
            show_default=False,
        ),
    ] = None,
    worker_id: Annotated[
        str | None, typer.Option("--worker-id", help="Worker id [default: HOSTNAME-PORT]")
    ] = None,
    advertise_url: Annotated[
        str | None,
        typer.Option(
            help="URL orchestratord uses to reach the worker "
            "[default: the worker's http://HOST:PORT; with a wildcard --host, this host's name]"
        ),
    ] = None,
    pool: Annotated[
        str | None,
        typer.Option(help="Pool name the worker reports to orchestratord [default: host name]"),
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait until ready")] = 120.0,
    as_json: JsonOpt = False,
) -> None:
    """Start a detached llorch-workerd and wait until it is ready. It serves a catalog
    model."""

    def waiting(r: WorkerRecord) -> None:
        typer.echo(
            f"waiting for worker {r['worker_id']} (pid {r['pid']}) at {r['url']} ...", err=True
        )

    if pool is not None:
        check_pool_name(pool)
    record = spawn_mod.spawn(
        _settings(ctx),
        backend,
        model,
        port=_parse_port(port),
        host=host,
        slots=slots,
        n_ctx=n_ctx,
        threads=threads,
        max_queue=max_queue,
        orchestrator=orchestrator_url,
        token=cluster_token,
        worker_id=worker_id,
        advertise_url=advertise_url,
        timeout=timeout,
        on_wait=waiting,
        extra_args=("--pool", pool) if pool else (),
    )
    if as_json:
        render.print_json(_shown(record, "ready", None))
    else:
        typer.echo(
            f"worker {record['worker_id']} ready at {record['url']} (pid {record['pid']}, "
            f"model {record['model']}, backend {record['backend']}, log {record['log_path']})"
        )


@worker_app.command("list")
def worker_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List this host's workers with their live state from /health."""
    live = workers_mod.list_workers(_settings(ctx))
    if as_json:
        shown = [_shown(w.record, w.state, w.health, w.registry) for w in live]
        render.print_json({"workers": shown})
        return
    cores, used = physical_cores(), workers_mod.threads_in_use(live)
    if not live:
        typer.echo("no workers")
        return
    rows = [["ID", "STATE", "PID", "URL", "MODEL", "BACKEND", "SLOTS", "THREADS"]]
    for w in live:
        busy = w.health.get("slots_busy", "?") if w.health else "-"
        rows.append(
            [
                w.record["worker_id"],
                w.state,
                str(w.record["pid"]),
                w.record["url"],
                w.record["model"],
                w.record["backend"],
                f"{busy}/{w.record['slots']}",
                str(w.record.get("threads", "-")),
            ]
        )
    render.table(rows)
    over = " (more than the cores: stop and spawn again to share them)" if used > cores else ""
    typer.echo(f"threads: {used} in use on {cores} physical cores{over}")


@worker_app.command("stop")
def worker_stop(
    ctx: typer.Context,
    worker_id: Annotated[str | None, typer.Argument(help="Worker id")] = None,
    all_workers: Annotated[bool, typer.Option("--all", help="Stop every worker.")] = False,
    grace: Annotated[float, typer.Option(help="Seconds between SIGTERM and SIGKILL")] = 10.0,
    as_json: JsonOpt = False,
) -> None:
    """Stop workers and deregister them from orchestratord. SIGTERM first, SIGKILL after
    --grace."""
    done = workers_mod.stop(_settings(ctx), worker_id, all_workers=all_workers, grace=grace)
    if as_json:
        render.print_json({"stopped": done})
        return
    for d in done:
        typer.echo(
            f"stopped {d['worker_id']}: process {d['process']}; orchestrator: {d['orchestrator']}"
        )
    if not done:
        typer.echo("no workers")


@worker_app.command("logs")
def worker_logs(
    ctx: typer.Context,
    worker_id: Annotated[str, typer.Argument(help="Worker id")],
    follow: Annotated[bool, typer.Option("-f", "--follow", help="Print new lines.")] = False,
    lines: Annotated[int, typer.Option("-n", "--lines", help="Lines of history to print")] = 50,
) -> None:
    """Print a worker's log (its stdout and stderr)."""
    settings = _settings(ctx)
    path = workers_mod.log_path(settings, worker_id)
    history, end = workers_mod.tail(path, lines)
    sys.stdout.write(history)
    sys.stdout.flush()
    if follow:
        for chunk in workers_mod.follow(settings, worker_id, path, end):
            sys.stdout.write(chunk)
            sys.stdout.flush()


@worker_app.command("cleanup")
def worker_cleanup(
    ctx: typer.Context,
    grace: Annotated[
        float, typer.Option(help="Seconds a worker may stay unhealthy before it is stopped")
    ] = workers_mod.CLEANUP_GRACE_S,
    as_json: JsonOpt = False,
) -> None:
    """Remove dead workers' records and stop unhealthy workers. Records of exited workers
    and of reused pids go; workers unhealthy past --grace are stopped."""
    report = workers_mod.cleanup(_settings(ctx), grace=grace)
    if as_json:
        render.print_json({"cleanup": report})
        return
    for item in report:
        extra = f" ({item['unhealthy_for_s']}s)" if "unhealthy_for_s" in item else ""
        if "orchestrator" in item:
            extra += f"; orchestrator: {item['orchestrator']}"
        typer.echo(
            f"{item['worker_id']} [{item['state']}]: {render.CLEANUP_WORDS[item['action']]}{extra}"
        )
    if not report:
        typer.echo("no workers")


# ---- entry point ----------------------------------------------------------------------------


def _fail(message: str, code: int) -> NoReturn:
    fail_line(PROG, message)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI and turn every failure into one line on stderr and its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("LLORCH_DEBUG", "").lower() in ("1", "true")
    try:
        code = run_typer(app, PROG, args)
    except PoolError as e:
        if debug:
            traceback.print_exc()
        _fail(e.line(), e.exit_code)
    except BrokenPipeError:
        sys.exit(141)
    except Exception as e:
        if debug:
            traceback.print_exc()
        _fail(f"unexpected {type(e).__name__}: {e}; rerun with --debug and report it", 1)
    sys.exit(code)
