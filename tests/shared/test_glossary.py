"""The README's glossary read against the four programs' `--help`, and what every program
shares: `--version` and shell completion."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = {
    "orchestratord": "orchestratord",
    "llorch-workerd": "worker",
    "llorch-pool": "pool_ctl",
    "llorch": "llorch_ctl",
}
# The names the four programs used before they shared one vocabulary.
RETIRED = ("--token", "--orch-url", "--orchestrator", "ORCHD_", "LLORCH_TOKEN", "LLORCH_URL")


def run(program: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLORCH_")}
    return subprocess.run(
        [sys.executable, "-m", MODULES[program], *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "COLUMNS": "200"},
        cwd=ROOT,
    )


@functools.cache
def help_text(command: str) -> str:
    program, *words = command.split()
    r = run(program, *words, "--help")
    assert r.returncode == 0, (command, r.stderr)
    return " ".join(r.stdout.split())  # wrapped lines joined: one name is never split


def glossary() -> list[tuple[str, str, str | None, list[str]]]:
    """(concept, flag, variable or None, commands) for each row of the README's table."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Glossary") :]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or cells[0] in ("concept", "---"):
            continue
        concept, flag, env, where = cells
        commands = [w.strip().strip("`") for w in where.split(",")]
        rows.append((concept, flag.strip("`"), None if env == "-" else env.strip("`"), commands))
    return rows


def test_the_glossary_is_what_the_programs_say() -> None:
    """OPS-001: the README glossary: each flag and variable is in the --help of every command it
    names, with that variable; no help uses a retired name."""
    rows = glossary()
    assert len(rows) >= 15 and {"orchestratord", "llorch-workerd", "llorch-pool", "llorch"} <= {
        c for *_, commands in rows for c in commands
    }
    for concept, flag, env, commands in rows:
        for command in commands:
            text = help_text(command)
            assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), (concept, command)
            if env is not None:
                assert re.search(rf"\[env var: {env}[;\]]", text), (concept, command, env)
    for command in {c for *_, commands in rows for c in commands}:
        text = help_text(command)
        for old in RETIRED:
            assert not re.search(rf"(?<![\w-]){re.escape(old)}(?![\w-])", text), (command, old)
        for var in re.findall(r"\[env var: ([A-Z0-9_]+)[;\]]", text):
            assert var.startswith("LLORCH_"), (command, var)


@pytest.mark.parametrize("program", sorted(MODULES))
def test_version_and_completion(program: str) -> None:
    """OPS-001, ORCH-001, WRK-002, POOL-001, CTL-001: `--version` prints `PROGRAM VERSION`; typer's
    completion script is there."""
    r = run(program, "--version")
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == f"{program} {metadata.version('llorch')}\n"
    c = run(program, "--show-completion", "bash")
    assert c.returncode == 0, c.stderr
    assert "complete" in c.stdout and program.replace("-", "_").upper() in c.stdout.upper()
