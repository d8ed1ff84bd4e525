"""The `llorch` command tree (typer): pool hosts over SSH, orchestratord over HTTP.

`cli.main` runs it and renders failures; `llorch pool models|worker|backends` with plain
arguments takes `passthrough.fast_remote` instead, which needs neither typer nor this module.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
from typer._click.core import Context as ClickContext
from typer._click.exceptions import UsageError
from typer.core import TyperCommand

from llorch_ctl.inventory import Inventory, load_inventory
from llorch_ctl.passthrough import MIN_CONNECT_TIMEOUT, split_remote_args
from shared.version import version_option

if TYPE_CHECKING:
    from llorch_ctl.orch import OrchSettings
    from llorch_sdk import Submitted

# httpx and the SDK are imported by the HTTP commands only, paramiko by the SSH ones: each
# command starts faster (bench/ssh.py compares `llorch pool` with plain `ssh`).


@dataclass(frozen=True)
class CtlSettings:
    """What the top-level options say; the inventory is read only by commands that need it."""

    config: Path | None
    debug: bool

    def inventory(self) -> Inventory:
        return load_inventory(self.config)


def _settings(ctx: typer.Context) -> CtlSettings:
    obj = ctx.find_root().obj
    assert isinstance(obj, CtlSettings)
    return obj


app = typer.Typer(
    name="llorch",
    help="Operate a llorch fleet: pool hosts over SSH, orchestratord over HTTP.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
pool_app = typer.Typer(help="Run llorch-pool on a pool host over SSH.", no_args_is_help=True)
models_app = typer.Typer(
    help="Models on a pool host (`llorch-pool models ...`).", no_args_is_help=True
)
worker_app = typer.Typer(
    help="Workers on a pool host (`llorch-pool worker ...`).", no_args_is_help=True
)
tasks_app = typer.Typer(help="Tasks in orchestratord.", no_args_is_help=True)
workers_app = typer.Typer(
    help="orchestratord's worker registry. Without a command, the table; or list and rm.",
    invoke_without_command=True,
)
app.add_typer(pool_app, name="pool")
pool_app.add_typer(models_app, name="models")
pool_app.add_typer(worker_app, name="worker")
app.add_typer(tasks_app, name="tasks")
app.add_typer(workers_app, name="workers")


@app.callback()
def root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            envvar="LLORCH_CONFIG",
            help="Inventory file (default ~/.config/llorch/config.toml).",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks on failure.")] = False,
    version: Annotated[bool, version_option("llorch")] = False,
) -> None:
    ctx.obj = CtlSettings(config=config, debug=debug)


# --- llorch pool ... -----------------------------------------------------------------------

HostOpt = Annotated[str, typer.Option("--host", help="Pool name from the inventory.")]
AcceptOpt = Annotated[
    bool,
    typer.Option(
        "--accept-new-host-key",
        help="Trust and save an unknown host key (a changed key is always refused).",
    ),
]
TimeoutOpt = Annotated[
    float | None,
    typer.Option(
        "--connect-timeout",
        min=MIN_CONNECT_TIMEOUT,
        help="Seconds to connect and log in.",
        show_default=False,
    ),
]
PASSTHROUGH = {"allow_extra_args": True, "ignore_unknown_options": True}
REMOTE_EPILOG = (
    "Other arguments go to llorch-pool unchanged (--json included). Only the first --host is"
    " the pool; a later one (spawn's bind address) is llorch-pool's. After `--` everything is"
    " llorch-pool's, e.g. `-- --help` for its own help."
)


class RemoteCommand(TyperCommand):
    """Parses only llorch's own options; the rest reaches llorch-pool verbatim, in order."""

    def parse_args(self, ctx: ClickContext, args: list[str]) -> list[str]:
        ours, rest = split_remote_args(args)
        return super().parse_args(ctx, [*ours, "--", *rest])


def _remote(words: Sequence[str]) -> Callable[..., int]:
    def command(
        ctx: typer.Context,
        host: HostOpt,
        accept_new_host_key: AcceptOpt = False,
        connect_timeout: TimeoutOpt = None,
    ) -> int:
        from llorch_ctl.remote import run_remote

        return run_remote(
            _settings(ctx).inventory(),
            host,
            [*words, *ctx.args],
            accept_new_host_key=accept_new_host_key,
            connect_timeout=connect_timeout,
        )

    return command


def _add_remote(group: typer.Typer, words: Sequence[str], help_text: str) -> None:
    group.command(
        words[-1],
        cls=RemoteCommand,
        help=help_text,
        epilog=REMOTE_EPILOG,
        context_settings=PASSTHROUGH,
    )(_remote(words))


for _name, _help in {
    "download": "Download a GGUF model from Hugging Face on the pool host.",
    "list": "List the pool host's models.",
    "rm": "Remove a model from the pool host.",
    "import": "Import a GGUF file already on the pool host.",
    "verify": "Check the pool host's model files against their sha256.",
}.items():
    _add_remote(models_app, ["models", _name], _help)
for _name, _help in {
    "spawn": "Start a worker on the pool host (BACKEND --model ID ...).",
    "list": "List the pool host's workers.",
    "stop": "Stop a worker on the pool host.",
    "logs": "Show a worker's log from the pool host.",
    "cleanup": "Remove dead workers' records and stop unhealthy workers.",
}.items():
    _add_remote(worker_app, ["worker", _name], _help)
_add_remote(pool_app, ["backends"], "Show the backends the pool host can run (cpu, cuda, metal).")


@pool_app.command("status")
def pool_status(
    ctx: typer.Context,
    host: Annotated[
        list[str] | None, typer.Option("--host", help="Only these pools (repeatable).")
    ] = None,
    accept_new_host_key: AcceptOpt = False,
    connect_timeout: TimeoutOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> int:
    """Ask every pool at once for its workers; print one table. Exit 1 if any failed."""
    from llorch_ctl.remote import gather_status, paramiko_factory, render_status, status_json

    inv = _settings(ctx).inventory()
    names = list(host) if host else list(inv.pools)
    for n in names:
        inv.pool(n)
    rows = gather_status(inv, names, paramiko_factory(accept_new_host_key), connect_timeout)
    sys.stdout.write(status_json(rows) + "\n" if as_json else render_status(rows))
    return 1 if any(r.error is not None for r in rows) else 0


# --- orchestratord and workers over HTTP ---------------------------------------------------

UrlOpt = Annotated[
    str | None,
    typer.Option(
        "--orchestrator-url",
        envvar="LLORCH_ORCHESTRATOR_URL",
        help="orchestratord's base URL [default: the inventory's, then http://127.0.0.1:8080]",
        show_default=False,
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="LLORCH_API_KEY",
        help="The client API key [default: the inventory's]",
        show_default=False,
    ),
]
ClusterOpt = Annotated[
    str | None,
    typer.Option(
        "--cluster-token",
        envvar="LLORCH_CLUSTER_TOKEN",
        help="The cluster token [default: the inventory's]",
        show_default=False,
    ),
]
AdminOpt = Annotated[
    str | None,
    typer.Option(
        "--admin-token",
        envvar="LLORCH_ADMIN_TOKEN",
        help="The admin token [default: the inventory's; else the cluster token]",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def _orch(
    ctx: typer.Context,
    url: str | None,
    key: str | None,
    *,
    credential: Literal["api_key", "cluster_token", "admin_token"] = "api_key",
) -> OrchSettings:
    """`key` is the credential given for this command; the inventory's of the same kind fills
    in what flags and environment leave out."""
    from llorch_ctl import orch

    fix = orch.FIX[credential]
    if url is None or key is None:
        inv = _settings(ctx).inventory()
        inv_key = getattr(inv, credential)
        if credential == "admin_token" and inv_key is None:
            inv_key = inv.cluster_token
        return orch.orch_settings(url, key, inv.orch_url, inv_key, fix)
    return orch.orch_settings(url, key, None, None, fix)


Credential = Literal["api_key", "cluster_token", "admin_token"]


def _orch_either(
    ctx: typer.Context, url: str | None, given: Sequence[tuple[str | None, Credential]]
) -> OrchSettings:
    """For a command that takes either of two credentials (CTL-091): the first one given by
    flag or variable, else the inventory's, in the same order."""
    from llorch_ctl import orch

    fix = ", or ".join(orch.FIX[kind] for _, kind in given)
    key = next((value for value, _ in given if value), None)
    if url is not None and key is not None:
        return orch.orch_settings(url, key, None, None, fix)
    inv = _settings(ctx).inventory()
    inv_key = next((getattr(inv, kind) for _, kind in given if getattr(inv, kind)), None)
    return orch.orch_settings(url, key, inv.orch_url, inv_key, fix)


def _print_token(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command()
def infer(
    ctx: typer.Context,
    prompt: Annotated[
        str | None, typer.Option(help="Prompt text, sent as is.", show_default=False)
    ] = None,
    message: Annotated[
        list[str] | None,
        typer.Option(
            "--message",
            help="A user message, rendered with the model's chat template (repeatable; "
            "instead of --prompt).",
            show_default=False,
        ),
    ] = None,
    system: Annotated[
        str | None,
        typer.Option(help="A system message before the --message ones.", show_default=False),
    ] = None,
    worker: Annotated[
        str | None, typer.Option(help="Stream straight from this worker (HOST:PORT).")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="Go through orchestratord with this model.")
    ] = None,
    cluster_token: Annotated[
        str | None,
        typer.Option(
            "--cluster-token",
            envvar="LLORCH_CLUSTER_TOKEN",
            help="The cluster token, for --worker [default: the inventory's]",
            show_default=False,
        ),
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate at most.")] = 64,
    temperature: Annotated[float | None, typer.Option(min=0.0)] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    json_schema: Annotated[
        Path | None,
        typer.Option(
            "--json-schema",
            help="A JSON Schema file: the output is JSON that matches it.",
            show_default=False,
        ),
    ] = None,
    orchestrator_url: UrlOpt = None,
    api_key: KeyOpt = None,
    stats: Annotated[
        bool,
        typer.Option(
            help="Print the task id when it is accepted and the end event, as JSON on stderr."
        ),
    ] = False,
) -> int:
    """Stream one generation to stdout, token by token. Ctrl-C cancels it."""
    from llorch_ctl import infer as direct
    from llorch_ctl import orch

    if (worker is None) == (model is None):
        raise UsageError("give exactly one of --worker HOST:PORT or --model NAME", ctx)
    if (prompt is None) == (not message):
        raise UsageError("give exactly one of --prompt TEXT or --message TEXT", ctx)
    if system is not None and not message:
        raise UsageError("--system goes with --message, not --prompt", ctx)
    text: dict[str, Any] = (
        {"prompt": prompt}
        if prompt is not None
        else {"messages": chat_messages(system, message or [])}
    )
    params: dict[str, Any] = {"max_tokens": max_tokens}
    if temperature is not None:
        params["temperature"] = temperature
    if seed is not None:
        params["seed"] = seed
    if stop:
        params["stop"] = list(stop)
    if json_schema is not None:
        params["json_schema"] = read_schema(json_schema, ctx)
    if worker is not None:
        token = cluster_token or _settings(ctx).inventory().cluster_token
        end = direct.stream_execute(
            direct.worker_url(worker), {**text, **params}, token=token, on_token=_print_token
        )
    else:
        assert model is not None
        settings = _orch(ctx, orchestrator_url, api_key)

        def submitted(sub: Submitted) -> None:
            if stats:  # the task id at once, for `llorch tasks status|cancel` while it runs
                position = {"queue_position": sub.queue_position}
                sys.stderr.write(json.dumps({"task_id": sub.task_id, **position}) + "\n")
                sys.stderr.flush()

        end = orch.infer(settings, model, text, params, _print_token, submitted)
    sys.stdout.write("\n")
    if stats:
        sys.stderr.write(json.dumps(end) + "\n")
    return 0


def read_schema(path: Path, ctx: typer.Context) -> dict[str, Any]:
    """The JSON Schema of `infer --json-schema FILE` (ORCH-247): a JSON object, else a usage
    error."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise UsageError(f"--json-schema {path}: cannot read it: {e.strerror or e}", ctx) from None
    except ValueError as e:
        raise UsageError(f"--json-schema {path}: not valid JSON: {e}", ctx) from None
    if not isinstance(schema, dict):
        raise UsageError(f"--json-schema {path}: must hold a JSON object (a JSON Schema)", ctx)
    return schema


def chat_messages(system: str | None, user: Sequence[str]) -> list[dict[str, str]]:
    """The messages of `infer --system/--message`: the system one first, then the user ones."""
    first = [{"role": "system", "content": system}] if system is not None else []
    return first + [{"role": "user", "content": m} for m in user]


@tasks_app.command("list")
def tasks_list(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            help="Only tasks in this state (queued, running, succeeded, failed, cancelled).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Only this model.", show_default=False)] = None,
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant (admin token).", show_default=False)
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only tasks created after this: seconds/minutes/hours/days ago (30s, 15m, 2h, "
            "1d) or unix milliseconds.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="Tasks per page.")] = 50,
    all_pages: Annotated[
        bool, typer.Option("--all", help="Follow the pages to the end instead of one page.")
    ] = False,
    orchestrator_url: UrlOpt = None,
    api_key: KeyOpt = None,
    admin_token: AdminOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """List tasks, newest first. A client key sees its tenant's; the admin token sees all."""
    import time

    from llorch_ctl import orch

    since_ms = orch.parse_since(since, now_ms=int(time.time() * 1000)) if since else None
    if admin_token is not None or tenant is not None:
        settings = _orch(ctx, orchestrator_url, admin_token, credential="admin_token")
    else:
        settings = _orch(ctx, orchestrator_url, api_key)
    tasks = orch.list_tasks(
        settings,
        status=status,
        model=model,
        tenant=tenant,
        since_ms=since_ms,
        limit=limit,
        all_pages=all_pages,
    )
    sys.stdout.write(json.dumps(tasks, indent=2) + "\n" if as_json else orch.render_tasks(tasks))
    return 0


@tasks_app.command("status")
def tasks_status(
    ctx: typer.Context,
    task_id: str,
    orchestrator_url: UrlOpt = None,
    api_key: KeyOpt = None,
    admin_token: AdminOpt = None,
) -> int:
    """Print a task's record as JSON. The admin token sees every tenant's tasks."""
    from llorch_ctl import orch

    settings = _orch_either(
        ctx, orchestrator_url, [(admin_token, "admin_token"), (api_key, "api_key")]
    )
    record = orch.task_status(settings, task_id)
    sys.stdout.write(json.dumps(record, indent=2) + "\n")
    return 0


@tasks_app.command("cancel")
def tasks_cancel(
    ctx: typer.Context,
    task_id: str,
    orchestrator_url: UrlOpt = None,
    api_key: KeyOpt = None,
    admin_token: AdminOpt = None,
) -> int:
    """Cancel a task. One that already finished is left as it is, and the line says so."""
    from llorch_ctl import orch

    settings = _orch_either(
        ctx, orchestrator_url, [(admin_token, "admin_token"), (api_key, "api_key")]
    )
    sys.stderr.write(orch.task_cancel(settings, task_id) + "\n")
    return 0


def _show_workers(settings: OrchSettings, as_json: bool) -> int:
    from llorch_ctl import orch

    ws = orch.workers(settings)
    sys.stdout.write(json.dumps(ws, indent=2) + "\n" if as_json else orch.render_workers(ws))
    return 0


def _registry_settings(
    ctx: typer.Context, url: str | None, admin_token: str | None, cluster_token: str | None
) -> OrchSettings:
    """The registry takes the admin token, else the cluster token (CTL-091): an operator's
    laptop needs no pool host's secret."""
    return _orch_either(ctx, url, [(admin_token, "admin_token"), (cluster_token, "cluster_token")])


@workers_app.callback()
def workers(
    ctx: typer.Context,
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
    cluster_token: ClusterOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show orchestratord's worker registry (the same as `llorch workers list`)."""
    if ctx.invoked_subcommand is None:
        settings = _registry_settings(ctx, orchestrator_url, admin_token, cluster_token)
        raise typer.Exit(_show_workers(settings, as_json))


@workers_app.command("list")
def workers_list(
    ctx: typer.Context,
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
    cluster_token: ClusterOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Show orchestratord's worker registry (admin or cluster token)."""
    settings = _registry_settings(ctx, orchestrator_url, admin_token, cluster_token)
    return _show_workers(settings, as_json)


def _admin_api(ctx: typer.Context, url: str | None, admin_token: str | None) -> Any:
    """orchestratord's admin endpoints with the admin token (flag, variable, inventory)."""
    from llorch_ctl import orch
    from llorch_ctl.fleet import FleetApi

    if url is None or admin_token is None:
        inv = _settings(ctx).inventory()
        settings = orch.orch_settings(url, admin_token, inv.orch_url, inv.admin_token)
    else:
        settings = orch.orch_settings(url, admin_token, None, None)
    return FleetApi(settings.url, settings.api_key)


def _drain_command(undo: bool) -> Callable[..., int]:
    def command(
        ctx: typer.Context,
        worker_id: Annotated[list[str], typer.Argument(help="Worker id(s).")],
        orchestrator_url: UrlOpt = None,
        admin_token: AdminOpt = None,
    ) -> int:
        with contextlib.closing(_admin_api(ctx, orchestrator_url, admin_token)) as api:
            for wid in worker_id:
                w = api.undrain(wid) if undo else api.drain(wid)
                sys.stderr.write(f"worker {wid}: {w.get('state', '?')}\n")
        return 0

    return command


workers_app.command(
    "drain",
    help="Send these workers no new task; running ones finish. Then each is `drained`; "
    "`llorch workers undrain` undoes it (admin token).",
)(_drain_command(undo=False))
workers_app.command(
    "undrain",
    help="Undo a drain: these workers take new tasks again. Queued ones start at once "
    "(admin token).",
)(_drain_command(undo=True))


@workers_app.command("rm")
def workers_rm(
    ctx: typer.Context,
    worker_id: Annotated[list[str], typer.Argument(help="Worker id(s) to remove.")],
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
    cluster_token: ClusterOpt = None,
) -> int:
    """Remove workers from orchestratord's registry.

    A dead one, or one you stop by hand: a live worker that is removed registers again at its
    next heartbeat, so stop it first (`llorch pool worker stop`), which also deregisters it.
    """
    from llorch_ctl import orch

    key = admin_token or cluster_token
    settings = _orch(ctx, orchestrator_url, key, credential="admin_token")
    for wid in worker_id:
        sys.stderr.write(orch.remove_worker(settings, wid) + "\n")
    return 0


# --- llorch fleet ... ----------------------------------------------------------------------

fleet_app = typer.Typer(help="Converge the fleet on orchestratord's plan.", no_args_is_help=True)
app.add_typer(fleet_app, name="fleet")


@fleet_app.command("apply")
def fleet_apply(
    ctx: typer.Context,
    orchestrator_url: Annotated[
        str | None,
        typer.Option(
            "--orchestrator-url",
            envvar="LLORCH_ORCHESTRATOR_URL",
            help="orchestratord's base URL; spawned workers register with it too [default: the "
            "inventory's, then http://127.0.0.1:8080]",
            show_default=False,
        ),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(
            "--admin-token",
            envvar="LLORCH_ADMIN_TOKEN",
            help="The admin token [default: the inventory's]",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the actions; lease and change nothing.")
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Keep converging, one pass per --interval.")
    ] = False,
    interval: Annotated[
        float,
        typer.Option(
            min=0.1,
            envvar="LLORCH_FLEET_INTERVAL",
            help="Seconds between passes: how soon a task for a model with no replica brings "
            "one up, and an idle one goes.",
        ),
    ] = 5.0,
    replace_misplaced: Annotated[
        bool,
        typer.Option(
            "--replace-misplaced",
            help="Drain and stop replicas on pools their model's `pools` do not list, once "
            "placed ones serve (default: report them and leave them alone).",
        ),
    ] = False,
    probe_memory: Annotated[
        bool,
        typer.Option(
            "--probe-memory/--no-probe-memory",
            help="Before placing a replica, report its pools' free memory and model sizes "
            "(llorch-pool backends --memory) so the plan places it only where it fits.",
        ),
    ] = True,
    accept_new_host_key: AcceptOpt = False,
    connect_timeout: TimeoutOpt = None,
) -> int:
    """Read GET /v2/fleet/plan and run each action over SSH. Each prints with its result."""
    from llorch_ctl import orch
    from llorch_ctl.fleet import FleetApi, apply_loop
    from llorch_ctl.inventory import resolve_target
    from llorch_ctl.remote import paramiko_factory, run_pool_command

    inv = _settings(ctx).inventory()
    settings = orch.orch_settings(orchestrator_url, admin_token, inv.orch_url, inv.admin_token)
    url = settings.url
    factory = paramiko_factory(accept_new_host_key)

    def run(pool: str, argv: Sequence[str]) -> tuple[int, str, str]:
        target = resolve_target(inv, pool, connect_timeout=connect_timeout)
        out: list[bytes] = []
        err: list[bytes] = []
        status = run_pool_command(target, argv, factory(target), out.append, err.append)
        return (
            status,
            b"".join(out).decode(errors="replace"),
            b"".join(err).decode(errors="replace"),
        )

    def bind_host(pool: str) -> str:
        return resolve_target(inv, pool, connect_timeout=connect_timeout).hostname

    def echo(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    api = FleetApi(url, settings.api_key)
    try:
        return apply_loop(
            api,
            run,
            orchestrator_url=url,
            bind_host=bind_host,
            dry_run=dry_run,
            watch=watch,
            interval_s=interval,
            echo=echo,
            known_pools=frozenset(inv.pools),
            replace_misplaced=replace_misplaced,
            probe_memory=probe_memory,
        )
    except KeyboardInterrupt:
        return 130
    finally:
        api.close()


@fleet_app.command("get")
def fleet_get(
    ctx: typer.Context, orchestrator_url: UrlOpt = None, admin_token: AdminOpt = None
) -> int:
    """Print the desired state (GET /v2/fleet) as JSON."""
    with contextlib.closing(_admin_api(ctx, orchestrator_url, admin_token)) as api:
        sys.stdout.write(json.dumps(api.fleet(), indent=2) + "\n")
    return 0


@fleet_app.command("put")
def fleet_put(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="A fleet file: TOML, or JSON when *.json.")],
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
) -> int:
    """Replace the desired state (PUT /v2/fleet). orchestratord keeps it across restarts."""
    body = _read_fleet(file)
    with contextlib.closing(_admin_api(ctx, orchestrator_url, admin_token)) as api:
        spec = api.put_fleet(body)
    sys.stderr.write(f"fleet replaced: {len(spec.get('models', {}))} model(s)\n")
    return 0


def _read_fleet(path: Path) -> dict[str, Any]:
    import tomllib

    from llorch_ctl.errors import ConfigError

    try:
        text = path.read_text("utf-8")
        body = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it: {e}") from None
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: does not parse: {e}") from None
    if not isinstance(body, dict):
        raise ConfigError(f"{path}: must hold an object")
    return body


# --- llorch policy ... ---------------------------------------------------------------------

policy_app = typer.Typer(
    help="Read, check, install or replay orchestratord's policy.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")
PolicyFile = Annotated[Path, typer.Argument(help="A Starlark policy file.")]


def _read_policy(path: Path) -> str:
    from llorch_ctl.errors import ConfigError

    try:
        return path.read_text("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it: {e}") from None


def _summary_line(verb: str, p: dict[str, Any]) -> str:
    defines = ", ".join(p.get("defines", [])) or "nothing (the built-in's functions)"
    line = f"{verb} {p.get('name')} (sha256 {str(p.get('sha256'))[:12]}): defines {defines}"
    return line + "".join(f"\nwarning: {w}" for w in p.get("warnings", []))


@policy_app.command("get")
def policy_get(
    ctx: typer.Context,
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole record.")] = False,
) -> int:
    """Print the running policy's source. Its name, hash and load time go to stderr."""
    import time

    with contextlib.closing(_admin_api(ctx, orchestrator_url, admin_token)) as api:
        p = api.policy()
    if as_json:
        sys.stdout.write(json.dumps(p, indent=2) + "\n")
        return 0
    loaded = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(p.get("loaded_ms", 0) / 1000))
    sys.stderr.write(f"{_summary_line('running', p)}\nloaded {loaded}\n")
    sys.stdout.write(p.get("source", ""))
    return 0


@policy_app.command("set")
def policy_set(
    ctx: typer.Context,
    file: PolicyFile,
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
) -> int:
    """Install FILE as the running policy, if it passes its checks. Else the running one
    stays."""
    source = _read_policy(file)
    with contextlib.closing(_admin_api(ctx, orchestrator_url, admin_token)) as api:
        p = api.set_policy(source, file.name)
    sys.stderr.write(_summary_line("installed", p) + "\n")
    return 0


@policy_app.command("check")
def policy_check(
    ctx: typer.Context,
    file: PolicyFile,
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
) -> int:
    """Check FILE on orchestratord, installing nothing. It is compiled, linted and dry-run
    there; exit 0 when it would be accepted, else the problems and exit 211."""
    source = _read_policy(file)
    with contextlib.closing(_admin_api(ctx, orchestrator_url, admin_token)) as api:
        p = api.check_policy(source, file.name)
    sys.stderr.write(_summary_line("ok:", p) + "\n")
    return 0


@policy_app.command(
    "replay",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def policy_replay(
    ctx: typer.Context,
    file: PolicyFile,
    db: Annotated[str, typer.Option("--db", help="orchestratord's database file (or a URL).")],
    against_running: Annotated[
        bool,
        typer.Option(
            "--against-running",
            help="Compare with the running policy (GET /v2/admin/policy) instead of the "
            "built-in one.",
        ),
    ] = False,
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
) -> int:
    """Replay recorded tasks under FILE and a baseline. It runs `orchestratord replay --db DB
    --policy FILE` with the other options (--baseline, --json, ...) and exits as it does."""
    import subprocess
    import tempfile

    argv = [sys.executable, "-m", "orchestratord", "replay", "--db", db, "--policy", str(file)]
    with tempfile.TemporaryDirectory(prefix="llorch-replay-") as tmp:
        if against_running:
            with contextlib.closing(_admin_api(ctx, orchestrator_url, admin_token)) as api:
                running = api.policy()
            baseline = Path(tmp) / "running.star"
            baseline.write_text(running.get("source", ""), "utf-8")
            argv += ["--baseline", str(baseline)]
        return subprocess.run([*argv, *ctx.args], check=False).returncode


@app.command()
def bench(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="The model every target runs.")],
    prompt: Annotated[str, typer.Option(help="Prompt text.")],
    workers: Annotated[
        list[str] | None, typer.Option(help="Worker ids, comma-separated (repeatable).")
    ] = None,
    pools: Annotated[
        list[str] | None, typer.Option(help="Pools (any worker of the pool), comma-separated.")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Tokens to generate at most.")] = 64,
    temperature: Annotated[float | None, typer.Option(min=0.0)] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    label: Annotated[str | None, typer.Option(help="A name for the saved run.")] = None,
    orchestrator_url: UrlOpt = None,
    api_key: KeyOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run record as JSON.")] = False,
) -> int:
    """Run one job at once on two or more workers or pools. Print TTFT, tok/s and total time
    of each (saved in orchestratord with the console's compare runs); exit 1 if one failed."""
    from llorch_ctl import bench as b

    chosen = b.targets(workers or [], pools or [])
    params = {"max_tokens": max_tokens, "temperature": temperature, "seed": seed}
    run = b.run_bench(
        _orch(ctx, orchestrator_url, api_key), model, chosen, prompt, params, label=label
    )
    sys.stdout.write(json.dumps(run, indent=2) + "\n" if as_json else b.render(run))
    return 1 if b.failed(run) else 0


# --- llorch limits ... / llorch usage (CTL-080..CTL-082) -------------------------------------

limits_app = typer.Typer(
    help="Tenants' limits in orchestratord (admin token).", no_args_is_help=True
)
app.add_typer(limits_app, name="limits")


@limits_app.command("get")
def limits_get(
    ctx: typer.Context,
    tenant: str,
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Show a tenant's limits and what it uses now."""
    from llorch_ctl import tenants

    settings = _orch(ctx, orchestrator_url, admin_token, credential="admin_token")
    reply = tenants.get_limits(settings, tenant)
    sys.stdout.write(
        json.dumps(reply, indent=2) + "\n" if as_json else tenants.render_limits(reply)
    )
    return 0


@limits_app.command("set")
def limits_set(
    ctx: typer.Context,
    tenant: str,
    concurrency: Annotated[
        str | None, typer.Option(help="Tasks queued or running at once.", show_default=False)
    ] = None,
    rpm: Annotated[
        str | None, typer.Option(help="Requests per window (orchestratord's --limits-window-s).")
    ] = None,
    tpm: Annotated[str | None, typer.Option(help="Prompt + completion tokens per window.")] = None,
    daily_tokens: Annotated[str | None, typer.Option(help="Tokens per UTC day.")] = None,
    monthly_tokens: Annotated[str | None, typer.Option(help="Tokens per UTC month.")] = None,
    weight: Annotated[
        float | None,
        typer.Option(min=0.000001, help="Share in fair queueing (default 1).", show_default=False),
    ] = None,
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Change a tenant's limits; those not given keep their value.

    Each limit is a whole number, or `none` for no limit."""
    from llorch_ctl import tenants

    given = {
        "concurrency": concurrency,
        "rpm": rpm,
        "tpm": tpm,
        "daily_tokens": daily_tokens,
        "monthly_tokens": monthly_tokens,
    }
    changes: dict[str, Any] = {}
    for name, text in given.items():
        if text is not None:
            try:
                changes[name] = tenants.parse_limit("--" + name.replace("_", "-"), text)
            except ValueError as e:
                raise UsageError(str(e), ctx) from None
    if weight is not None:
        changes["weight"] = weight
    if not changes:
        raise UsageError("give at least one limit to set (or --help)", ctx)
    settings = _orch(ctx, orchestrator_url, admin_token, credential="admin_token")
    reply = tenants.set_limits(settings, tenant, changes)
    sys.stdout.write(
        json.dumps(reply, indent=2) + "\n" if as_json else tenants.render_limits(reply)
    )
    return 0


@app.command()
def usage(
    ctx: typer.Context,
    since: Annotated[
        str, typer.Option(help="From this long ago (30m, 24h, 7d) or unix milliseconds.")
    ] = "24h",
    until: Annotated[
        str | None,
        typer.Option(
            help="Until this long ago or unix milliseconds [default: now].", show_default=False
        ),
    ] = None,
    by: Annotated[str, typer.Option(help="Group by tenant, model, key or hour.")] = "tenant",
    tenant: Annotated[
        str | None, typer.Option(help="Only this tenant (admin token).", show_default=False)
    ] = None,
    orchestrator_url: UrlOpt = None,
    api_key: KeyOpt = None,
    admin_token: AdminOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Token and task usage. A client key sees its tenant's; the admin token every tenant's."""
    from llorch_ctl import tenants

    if by not in ("tenant", "model", "key", "hour"):
        raise UsageError(f"--by {by!r}: give tenant, model, key or hour", ctx)
    if admin_token is not None or tenant is not None:
        settings = _orch(ctx, orchestrator_url, admin_token, credential="admin_token")
    else:
        settings = _orch(ctx, orchestrator_url, api_key)
    reply = tenants.usage(settings, since, until, by, tenant)
    sys.stdout.write(json.dumps(reply, indent=2) + "\n" if as_json else tenants.render_usage(reply))
    return 0


# `llorch keys ...` and `llorch audit` (llorch_ctl/admin.py) add themselves to `app`.
from llorch_ctl import admin as _admin_commands  # noqa: E402,F401
