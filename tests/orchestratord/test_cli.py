"""orchestratord's command line: typer options from the settings, defaults shown, LLORCH_*
variables, --version, and start-up failures as one line with exit status 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from orchestratord.cli import HELP, LISTS, _fields, env_name, flag


def orchestratord(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("LLORCH_")}
    return subprocess.run(
        [sys.executable, "-m", "orchestratord", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "COLUMNS": "200", **(env or {})},
    )


def test_every_setting_is_a_documented_option_with_its_variable() -> None:
    """ORCH-002: one option per setting, with help, its LLORCH_ variable and its default."""
    r = orchestratord("--help")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    for f, _ in _fields():
        assert HELP.get(f.name), f"no help for setting {f.name}"
        assert flag(f.name) in text and f"[env var: {env_name(f.name)}]" in text, f.name
    assert "[default: 8080]" in text and "[default: 127.0.0.1]" in text
    assert "LLORCH_API_KEYS" in text and LISTS["api_keys"] == "--api-key"


@pytest.mark.e2e
def test_start_up_failures_are_one_line_and_exit_2(tmp_path: Path) -> None:
    """ORCH-003: a bad flag or value, a port in use and a database URL whose driver is not
    installed end as `orchestratord: error: ...` on one line, exit 2, nothing served."""
    state = ["--state-dir", str(tmp_path)]
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        cases: list[tuple[list[str], dict[str, str], str]] = [
            (["--log-level", "LOUD"], {}, "--log-level must be one of debug, info"),
            (["--log-format", "xml"], {}, "--log-format must be 'text' or 'json'"),
            (["--bogus"], {}, "No such option: --bogus"),
            (["--port", "x"], {}, "Invalid value for '--port'"),
            ([], {"LLORCH_PORT": "eighty"}, "LLORCH_PORT='eighty'"),
            (["--port", str(busy)], {}, f"cannot listen on 127.0.0.1:{busy}"),
            (
                ["--db-url", "postgresql+psycopg://u@127.0.0.1/x"],
                {},
                "install it with 'pip install psycopg[binary]'",
            ),
            (["--policy", str(tmp_path / "none.star")], {}, "none.star"),
        ]
        for args, env, words in cases:
            r = orchestratord(*state, *args, env=env)
            assert r.returncode == 2, (args, r.stderr)
            assert r.stderr.startswith("orchestratord: error: "), r.stderr
            assert words in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_version() -> None:
    """ORCH-002: --version prints the program and the distribution's version."""
    r = orchestratord("--version")
    assert r.returncode == 0 and r.stdout.startswith("orchestratord ") and r.stderr == ""
