"""orchestratord's command line: one typer option per `Settings` field, defaults shown.

The options are derived from the dataclass, so a new setting is a new field (with a line in
HELP) and nothing else: its flag is `--field-name`, its environment variable
`LLORCH_FIELD_NAME` (the list-valued ones take a comma-separated value). Flags win over the
environment, the environment over the field's default. Reading the environment happens here
and nowhere else; a bad value names its variable.

With no command the program is the daemon (those options); `orchestratord replay ...` is the
what-if replay (orchestratord/replay/cli.py). Both are one typer app, so `--help` lists the
commands and a bad flag of either is the same one line.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer
from typer._click.core import ParameterSource
from typer._click.exceptions import UsageError

from orchestratord.replay.cli import command as replay_command
from orchestratord.settings import Settings, SettingsError
from shared.version import version_option

PROG = "orchestratord"
ENV_PREFIX = "LLORCH_"

HELP: dict[str, str] = {
    "host": "Address to listen on; beyond loopback it needs --api-key and --cluster-token",
    "port": "Port to listen on",
    "state_dir": "Where the default SQLite database lives "
    "[default: $XDG_STATE_HOME/llorch/orchestratord]",
    "db_url": "SQLAlchemy URL of the database [default: SQLite in --state-dir]",
    "policy": "Starlark policy file [default: the built-in policy]",
    "fleet": "Desired state of the fleet, TOML or .json (specs/fleet.md); re-read on SIGHUP",
    "api_keys": "A client key, TENANT:KEY (or KEY); repeatable. None: the client API is open",
    "cluster_token": "The cluster token: workers present it, orchestratord presents it to them",
    "admin_token": "The admin token: policy, fleet, drain, worker removal, every tenant's "
    "tasks. None: admin routes are refused unless nothing else is configured either",
    "expect_models": "A model to queue tasks for while no worker serves it (repeatable)",
    "retain_finished_s": "Seconds finished task records stay in the database",
    "queue_capacity": "Tasks that may wait in the queue",
    "queue_full_policy": "When the queue is full: reject (the new task) or drop-lru (the "
    "oldest queued, batch first)",
    "queue_discipline": "Order across tenants within a model and lane: wfq (weighted fair "
    "share; a tenant waits behind its own backlog) or fifo (first come, first served)",
    "tenant_weights": "TENANT=W: the tenant's weight in the fair share (default 1); repeatable",
    "retry_attempts": "Retries on another worker when one fails before the first token",
    "failover_max": "Times a task whose worker fails after its first token resumes on "
    "another worker (0: it fails WORKER_RESET)",
    "failover_warm_every": "Every N tokens of a running task, prefill its prompt and tokens on a "
    "standby worker, so that a failover resumes from a warm cache (0: off)",
    "heartbeat_stale_ms": "A worker silent this long gets no new work",
    "heartbeat_dead_ms": "A worker silent this long is marked dead",
    "retain_tasks": "Finished tasks whose events stay in memory for Last-Event-ID resume",
    "retain_events_bytes": "Memory (about) for the events of finished tasks; oldest go first",
    "default_deadline_ms": "Start deadline of tasks without deadline_ms (0: wait indefinitely)",
    "connect_timeout_s": "Seconds to connect to a worker",
    "read_timeout_s": "Longest silence tolerated from a worker stream, in seconds",
    "disconnect_grace_ms": "A running task with no event reader for this long is cancelled",
    "model_grace_ms": "A model whose last worker was heard from this long ago still queues "
    "tasks (a worker restarting); later it is 404 MODEL_NOT_FOUND. 0: no grace",
    "stream_coalesce_ms": "After the first token, send a stream's tokens in bursts at most "
    "this often (0: one write per event)",
    "worker_prefetch": "Jobs sent to a worker beyond its free slots, to wait in its own queue",
    "cache_index_entries": "Worker-block pairs the cache index keeps at most (about 500 bytes "
    "each); past it the least recently used go (ORCH-403)",
    "policy_budget_ms": "Time a policy call may take before it is cut off",
    "policy_pass_budget_ms": "Time the policy calls of one scheduling pass may take together; "
    "the rest of the queue waits for the next pass",
    "policy_breaker_failures": "Policy calls in a row that fail or overrun (or passes that "
    "overrun) before the built-in policy takes over for a cool-down",
    "policy_breaker_cooldown_s": "Seconds the built-in policy stands in after the breaker trips",
    "events_buffer": "Events a GET /v2/events reader may fall behind by before its oldest "
    "are dropped",
    "limits_window_s": "Length of the window of tenants' rpm and tpm limits, in seconds "
    "(fixed; it opens at a tenant's first request after the last one closed)",
    "usage_flush_s": "Seconds between writes of the usage counts to the database",
    "metrics_tenant_labels": "Distinct tenants that get their own `tenant` label in the "
    "metrics; the others are counted as `other`",
    "log_level": "debug, info, warning or error",
    "log_format": "text, or json (one object per line)",
}

# List-valued settings: the flag is singular and repeatable, the variable plural.
LISTS: dict[str, str] = {
    "api_keys": "--api-key",
    "expect_models": "--expect-model",
    "tenant_weights": "--tenant-weight",
}


def flag(name: str) -> str:
    return LISTS.get(name) or "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _base(hint: Any) -> Any:
    """`int | None` -> int; `Literal[...]` -> str; `tuple[str, ...]` -> tuple."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return str
    if origin in (typing.Union, types.UnionType) and args:
        return _base(args[0])
    if origin is tuple:
        return tuple
    return hint


def _convert(kind: Any, raw: str) -> Any:
    if kind is tuple:
        return [part.strip() for part in raw.split(",") if part.strip()]
    if kind is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ValueError(f"{raw!r} is not a boolean")
    return kind(raw)


def _fields() -> list[tuple[dataclasses.Field[Any], Any]]:
    hints = typing.get_type_hints(Settings)
    return [(f, _base(hints[f.name])) for f in dataclasses.fields(Settings) if f.init]


def _env_defaults(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings the environment gives, converted; a bad value names its variable."""
    out: dict[str, Any] = {}
    for f, kind in _fields():
        raw = env.get(env_name(f.name))
        if raw is None:
            continue
        try:
            out[f.name] = _convert(kind, raw)
        except ValueError as e:
            raise SettingsError(f"{env_name(f.name)}={raw!r}: {e}") from e
    return out


def _parameter(f: dataclasses.Field[Any], kind: Any) -> inspect.Parameter:
    default = f.default if f.default is not dataclasses.MISSING else None
    shown: bool | str = default is not None and f.name not in LISTS
    if kind is tuple:
        annotation: Any = list[str] | None
        default = None
    elif default is None:
        annotation = kind | None
    else:
        annotation = kind
    option = typer.Option(
        flag(f.name),
        help=f"{HELP.get(f.name, '')} [env var: {env_name(f.name)}]".strip(),
        show_default=shown,
        metavar="VALUE" if kind is tuple else None,
    )
    return inspect.Parameter(
        f.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=default,
        annotation=Annotated[annotation, option],
    )


def build_command(env: Mapping[str, str]) -> typer.Typer:
    """A typer app that returns the `Settings` the flags and `env` say, or with a command
    (`replay`) that command's exit status."""
    env_error: SettingsError | None = None
    try:
        env_values = _env_defaults(env)
    except SettingsError as e:
        # The daemon's variables are not replay's: a bad one stops only the daemon.
        env_error, env_values = e, {}
    fields = _fields()

    def command(ctx: typer.Context, **given: Any) -> Settings | None:
        if ctx.invoked_subcommand is not None:
            daemon_only = [
                flag(name)
                for name in given
                if name not in ("debug", "version")
                and ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
            ]
            if daemon_only:
                raise UsageError(
                    f"{', '.join(daemon_only)}: an option of the daemon, not of "
                    f"'{ctx.invoked_subcommand}'",
                    ctx,
                )
            return None
        if env_error is not None:
            raise env_error
        given.pop("version", None)
        given.pop("debug", None)
        # The environment's values came in as the options' defaults (default_map).
        values = {k: v for k, v in given.items() if v is not None}
        for name in LISTS:
            if name in values:
                values[name] = tuple(values[name])
        return Settings(**values)

    params = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_ONLY, annotation=typer.Context)]
    params += [_parameter(f, kind) for f, kind in fields]
    params.append(
        inspect.Parameter(
            "debug",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[
                bool, typer.Option("--debug", help="Show the traceback when start-up fails.")
            ],
        )
    )
    params.append(
        inspect.Parameter(
            "version",
            inspect.Parameter.KEYWORD_ONLY,
            default=False,
            annotation=Annotated[bool, version_option(PROG)],
        )
    )
    returns = Settings | None
    command.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params} | {"return": returns}
    command.__doc__ = (
        "llorch's orchestrator: the task API, the worker registry, policy-driven dispatch. "
        "With no command, runs the daemon with the options below; every one may also be set "
        f"as an environment variable {ENV_PREFIX}<FLAG>."
    )
    app = typer.Typer(name=PROG, pretty_exceptions_enable=False, rich_markup_mode=None)
    app.callback(
        invoke_without_command=True,
        subcommand_metavar="[COMMAND [ARGS]...]",
        context_settings={"default_map": env_values},
    )(command)
    app.command("replay")(replay_command)
    return app


def from_args(argv: Sequence[str], env: Mapping[str, str]) -> Settings | int:
    """The settings of `argv` over `env`, or the exit status when --help/--version or a
    command (`replay`) answered.

    Raises SettingsError for a bad value and typer's (click's) UsageError for bad flags.
    """
    rv = build_command(env)(args=list(argv), prog_name=PROG, standalone_mode=False)
    return rv if isinstance(rv, Settings) else int(rv or 0)
