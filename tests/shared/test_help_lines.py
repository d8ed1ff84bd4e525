"""The four programs' `--help`: every command of every group listed with one whole line of help
(ORCH-007, CTL-005, POOL-007), in an 80-column terminal, so the lists read the same way."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import typer
from typer._click.core import Command, Context
from typer.core import TyperGroup as Group

from llorch_ctl.app import app as llorch_app
from orchestratord.cli import build_command
from pool_ctl.cli import app as pool_app

WIDTH = 80  # click wraps help at min(terminal, 80) columns


def rows(group: Group, path: str) -> Iterator[tuple[str, str]]:
    """(command path, the line `--help` shows for it), for every command under `group`."""
    ctx = Context(group, info_name=path)
    names = group.list_commands(ctx)
    # click's own limit for a command's line: the width, less the indent and the names column.
    limit = WIDTH - 2 - 6 - max(len(n) for n in names)
    for name in names:
        cmd: Command | None = group.get_command(ctx, name)
        assert cmd is not None
        if cmd.hidden:
            continue
        yield f"{path} {name}", cmd.get_short_help_str(limit)
        if isinstance(cmd, Group):
            yield from rows(cmd, f"{path} {name}")


@pytest.mark.parametrize(
    "program, app",
    [
        ("orchestratord", build_command({})),
        ("llorch", llorch_app),
        ("llorch-pool", pool_app),
    ],
)
def test_orch_007_ctl_005_pool_007_every_command_has_one_whole_line(
    program: str, app: typer.Typer
) -> None:
    """ORCH-007, CTL-005, POOL-007: each command's line in its group's `--help` is its whole
    first sentence: not empty, not cut short with '...'."""
    group = typer.main.get_command(app)
    assert isinstance(group, Group)
    lines = list(rows(group, program))
    assert lines, program
    bad = [(path, line) for path, line in lines if not line or line.endswith("...")]
    assert bad == [], bad
