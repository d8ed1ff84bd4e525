"""Which words of a `llorch pool ...` command line are llorch's, and which go to llorch-pool.

Also the fast path for those commands: the commonest thing an operator runs should start as
fast as plain `ssh` does, so a valid line is parsed here without importing typer.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# Options `llorch pool ...` keeps for itself; everything else is llorch-pool's.
OWN_VALUE_OPTIONS = ("--host", "--connect-timeout")
OWN_FLAGS = ("--accept-new-host-key", "--help")


def split_remote_args(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split a command line into (ours, llorch-pool's), keeping llorch-pool's order.

    Only the first `--host` / `--connect-timeout` is ours, so `llorch pool worker spawn cpu
    --host box --model m --host 0.0.0.0` binds the worker to 0.0.0.0 on pool `box`; after `--`
    everything is llorch-pool's.
    """
    ours: list[str] = []
    rest: list[str] = []
    seen: set[str] = set()
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            rest.extend(args[i + 1 :])
            break
        name, eq, _ = a.partition("=")
        if name in OWN_VALUE_OPTIONS and name not in seen:
            seen.add(name)
            if eq:
                ours.append(a)
            else:
                ours.extend(args[i : i + 2])
                i += 1
        elif a in OWN_FLAGS and a not in seen:
            seen.add(a)
            ours.append(a)
        else:
            rest.append(a)
        i += 1
    return ours, rest


MODELS_SUBCOMMANDS = ("download", "list", "rm", "import", "verify")
WORKER_SUBCOMMANDS = ("spawn", "list", "stop", "logs", "cleanup")
MIN_CONNECT_TIMEOUT = 0.1


@dataclass(frozen=True)
class RemoteCall:
    """A fully valid `llorch pool models|worker|backends ...` command line, parsed."""

    config: Path | None
    pool: str
    argv: list[str]
    accept_new_host_key: bool = False
    connect_timeout: float | None = None


def _pool_words(words: Sequence[str]) -> int:
    """How many leading words name a remote command (0: not one)."""
    if words[:1] == ["backends"]:
        return 1
    if len(words) >= 2 and (
        (words[0] == "models" and words[1] in MODELS_SUBCOMMANDS)
        or (words[0] == "worker" and words[1] in WORKER_SUBCOMMANDS)
    ):
        return 2
    return 0


def parse_remote_call(args: Sequence[str], env_config: str | None) -> RemoteCall | None:
    """Parse `[--config F] [--debug] pool <remote command> ...`, or None for anything else.

    None also for anything odd (`--help`, a missing --host, a bad timeout): typer then parses
    the same line and gives its usual help or usage error, so the two never disagree.
    """
    config = env_config or None
    i = 0
    while i < len(args) and args[i].startswith("-"):
        name, eq, value = args[i].partition("=")
        if name == "--config" and eq:
            config, i = value, i + 1
        elif name == "--config" and i + 1 < len(args):
            config, i = args[i + 1], i + 2
        elif args[i] in ("--debug", "--no-debug"):
            i += 1
        else:
            return None
    if args[i : i + 1] != ["pool"]:
        return None
    n = _pool_words(args[i + 1 :])
    if n == 0:
        return None
    words = list(args[i + 1 : i + 1 + n])
    ours, rest = split_remote_args(args[i + 1 + n :])
    pool: str | None = None
    timeout: float | None = None
    accept = False
    j = 0
    while j < len(ours):
        name, eq, value = ours[j].partition("=")
        if name in OWN_VALUE_OPTIONS:
            if not eq:
                if j + 1 >= len(ours):
                    return None
                j += 1
                value = ours[j]
            if name == "--host":
                pool = value
            else:
                try:
                    timeout = float(value)
                except ValueError:
                    return None
                if not timeout >= MIN_CONNECT_TIMEOUT:
                    return None
        elif ours[j] == "--accept-new-host-key":
            accept = True
        else:
            return None
        j += 1
    if not pool:
        return None
    return RemoteCall(Path(config) if config else None, pool, [*words, *rest], accept, timeout)


def fast_remote(args: Sequence[str]) -> int | None:
    """Run a remote pool command without building the typer app; None when it is not one."""
    call = parse_remote_call(args, os.environ.get("LLORCH_CONFIG"))
    if call is None:
        return None
    from llorch_ctl.inventory import load_inventory
    from llorch_ctl.remote import run_remote

    return run_remote(
        load_inventory(call.config),
        call.pool,
        call.argv,
        accept_new_host_key=call.accept_new_host_key,
        connect_timeout=call.connect_timeout,
    )
