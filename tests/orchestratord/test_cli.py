"""orchestratord's command line: typer options from the settings, defaults shown, LLORCH_*
variables, --version, and start-up failures as one line with exit status 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llorch_sdk import Client
from orchestratord.cli import HELP, LISTS, _fields, env_name, flag
from tests.support import free_port, spawn, spawn_worker


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
    """ORCH-001, ORCH-002: one option per setting, with help, its variable and its default."""
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
    installed end as `orchestratord: error: ...` on one line, exit 2, nothing served; so does
    an --expect-model that is no model name (ORCH-045)."""
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
                # psycopg is a dependency (ORCH-340); a MySQL driver is not.
                ["--db-url", "mysql+pymysql://u@127.0.0.1/x"],
                {},
                "install it with 'pip install pymysql'",
            ),
            (["--policy", str(tmp_path / "none.star")], {}, "none.star"),
            (["--expect-model", "<img src=x>"], {}, "--expect-model '<img src=x>' must be"),
        ]
        for args, env, words in cases:
            r = orchestratord(*state, *args, env=env)
            assert r.returncode == 2, (args, r.stderr)
            assert r.stderr.startswith("orchestratord: error: "), r.stderr
            assert words in r.stderr and r.stderr.count("\n") == 1, r.stderr


def test_orch_007_help_lists_every_command_with_one_line() -> None:
    """ORCH-007: `orchestratord --help` lists its commands (replay), each with one line of
    help, next to the daemon's own options."""
    r = orchestratord("--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Usage: orchestratord [OPTIONS] [COMMAND [ARGS]...]"), r.stdout
    commands = r.stdout.split("\nCommands:\n", 1)[1].strip().splitlines()
    assert [line.split()[0] for line in commands] == ["replay"], commands
    assert commands[0].split(None, 1)[1].startswith("Replay recorded tasks"), commands
    assert "--queue-capacity" in r.stdout and "[env var: LLORCH_PORT]" in r.stdout


def test_orch_007_flt_055_replay_usage_errors_are_one_line_and_exit_2(tmp_path: Path) -> None:
    """ORCH-007, FLT-055: a bad flag of `orchestratord replay`, a missing one, a bad value and
    a daemon option given to replay are each one line `orchestratord: error: ...` and exit 2;
    a bad LLORCH_* variable of the daemon does not stop replay."""
    policy = tmp_path / "p.star"
    policy.write_text("")
    need = ["--db", str(tmp_path / "no.db"), "--policy", str(policy)]
    cases: list[tuple[list[str], dict[str, str], str]] = [
        (["replay", "--bogus"], {}, "No such option: --bogus; run 'orchestratord replay --help'"),
        (["replay", "--policy", str(policy)], {}, "Missing option '--db'"),
        (["replay", *need, "--queue-full-policy", "x"], {}, "must be one of reject, drop-lru"),
        (["replay", *need, "--queue-capacity", "x"], {}, "Invalid value for '--queue-capacity'"),
        (["--port", "9", "replay", *need], {}, "--port: an option of the daemon, not of 'replay'"),
        (["nosuch"], {}, "No such command 'nosuch'"),
        (["replay", *need], {"LLORCH_PORT": "eighty"}, "no database file"),
    ]
    for args, env, words in cases:
        r = orchestratord(*args, env=env)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr.startswith("orchestratord: error: "), r.stderr
        assert words in r.stderr and r.stderr.count("\n") == 1, (args, r.stderr)
        assert r.stdout == ""


def test_version() -> None:
    """ORCH-001: --version prints the program and the distribution's version."""
    r = orchestratord("--version")
    assert r.returncode == 0 and r.stdout.startswith("orchestratord ") and r.stderr == ""


@pytest.mark.e2e
def test_one_json_log_line_per_task(tmp_path: Path, tiny_model: Path) -> None:
    """ORCH-072: with --log-format json every line is one JSON object, and each finished task
    has exactly one line with its id, tenant, model, worker, queue ms, TTFT, tokens, outcome."""
    port = free_port()
    args = ["orchestratord", "--port", str(port), "--state-dir", str(tmp_path)]
    args += ["--api-key", "acme:key", "--cluster-token", "ct", "--log-format", "json"]
    with spawn(args, port, tmp_path / "orchd.log", "/health") as orch:
        extra = ["--orchestrator-url", orch.url, "--worker-id", "w-log"]
        with (
            spawn_worker(tiny_model, tmp_path, token="ct", extra=extra),
            Client(orch.url, api_key="key") as client,
        ):
            deadline = time.monotonic() + 30
            while not client.capabilities()["models"] and time.monotonic() < deadline:
                time.sleep(0.1)
            stream = client.stream("llorch-tiny", prompt="hi", max_tokens=3)
            stream.text()
            task_id = stream.task_id
        lines = orch.log_text().splitlines()
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and len(records) == len([ln for ln in lines if ln.strip()]), lines[:5]
    mine = [r for r in records if r.get("task_id") == task_id]
    assert len(mine) == 1, mine
    line = mine[0]
    assert (line["logger"], line["tenant"], line["model"], line["worker"]) == (
        "llorch.orchestrator.task",
        "acme",
        "llorch-tiny",
        "w-log",
    )
    assert (line["tokens"], line["outcome"]) == (3, "succeeded")
    assert line["queue_ms"] >= 0 and line["ttft_ms"] > 0
