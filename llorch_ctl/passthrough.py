"""Which words of a `llorch pool ...` command line are llorch's, and which go to llorch-pool."""

from __future__ import annotations

from collections.abc import Sequence

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
