"""How llorch-pool prints results for people: sizes, counts, aligned tables, model lines."""

from __future__ import annotations

import json
from typing import Any

import typer

from pool_ctl.catalog import ModelEntry

CLEANUP_WORDS = {
    "keep": "healthy, kept",
    "remove-gone": "process gone, record removed",
    "remove-reused": "pid now belongs to another program, record removed (not signalled)",
    "mark-unhealthy": "unhealthy, kept until the grace period ends",
    "stop-unhealthy": "unhealthy past the grace period, stopped",
}


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=True))


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def human_count(n: int | None) -> str:
    if n is None:
        return "-"
    for div, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.1f}{suffix}"
    return str(n)


def table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def model_line(e: ModelEntry) -> str:
    return (
        f"{e['id']}: {e['architecture'] or '?'} {human_count(e['parameter_count'])} params, "
        f"{e['quantization'] or '?'}, ctx {e['context_length'] or '?'}, "
        f"{human_size(e['size_bytes'])}, template {e['chat_template']}, sha256 {e['sha256'][:12]}…"
        f"\n  {e['path']}"
    )
