"""Pure parts of `llorch pool`: splitting options, the remote command line, the status table."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import pytest

from llorch_ctl.errors import (
    ApiFailed,
    AuthFailed,
    ConfigError,
    ConnectionLost,
    ConnectionRefused,
    ConnectTimeout,
    CtlError,
    HostKeyChanged,
    HostKeyUnknown,
    HttpUnreachable,
    Interrupted,
    NameUnresolved,
    RemoteCommandMissing,
    SshError,
    UnknownPool,
)
from llorch_ctl.inventory import parse_inventory
from llorch_ctl.passthrough import RemoteCall, parse_remote_call, split_remote_args
from llorch_ctl.remote import PoolStatus, gather_status, render_status
from llorch_ctl.transport import Sink, remote_command_line


def test_split_keeps_first_host_and_passes_the_rest_in_order() -> None:
    """CTL-020: only the first --host is llorch's; the rest reaches llorch-pool in order."""
    ours, rest = split_remote_args(
        ["cpu", "--host", "box", "--model", "m", "--host", "0.0.0.0", "--json"]
    )
    assert ours == ["--host", "box"]
    assert rest == ["cpu", "--model", "m", "--host", "0.0.0.0", "--json"]


def test_split_handles_equals_flags_and_double_dash() -> None:
    """CTL-020: llorch keeps --host, --connect-timeout, --accept-new-host-key; after `--`
    everything (`--help` included) is llorch-pool's."""
    ours, rest = split_remote_args(
        [
            "--host=box",
            "--accept-new-host-key",
            "--connect-timeout",
            "3",
            "x",
            "--",
            "--help",
            "--host",
            "y",
        ]
    )
    assert ours == ["--host=box", "--accept-new-host-key", "--connect-timeout", "3"]
    assert rest == ["x", "--help", "--host", "y"]


def test_remote_line_survives_a_real_posix_shell() -> None:
    """CTL-012: `[env 'K=V'...] POOL_CMD 'ARG'...`, every argument and env value quoted, so a
    POSIX shell hands them over verbatim."""
    nasty = [
        "a b",
        "it's",
        '"q"',
        "$(echo PWNED)",
        "; echo PWNED",
        "`echo PWNED`",
        "",
        "*",
        "~",
        "$HOME",
        "new\nline",
        "tab\there",
        "ünïcødé",
    ]
    prog = "import sys, json; print(json.dumps(sys.argv[1:]))"
    line = remote_command_line(f"{sys.executable} -c '{prog}'", nasty, {"X_Y": "v w$(id)"})
    assert line.startswith("env 'X_Y=v w$(id)' ")
    out = subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == nasty


def test_status_table_one_line_per_pool() -> None:
    """CTL-022: `POOL ADDRESS STATE WORKERS DETAIL`, one line per pool in the order asked."""
    rows = [
        PoolStatus(
            "east",
            "root@10.0.0.1:22",
            workers=[{"worker_id": "w1", "model": "tiny", "port": 8001, "state": "ready"}],
        ),
        PoolStatus("west", "root@10.0.0.2:22", error="connection refused by 10.0.0.2:22"),
    ]
    lines = render_status(rows).splitlines()
    assert lines[0].split() == ["POOL", "ADDRESS", "STATE", "WORKERS", "DETAIL"]
    assert lines[1].split() == ["east", "root@10.0.0.1:22", "ok", "1", "w1:tiny@8001(ready)"]
    assert lines[2].split()[:4] == ["west", "root@10.0.0.2:22", "error", "-"]
    assert lines[2].endswith("connection refused by 10.0.0.2:22")


def test_every_failure_has_its_own_exit_code() -> None:
    """CTL-040: each error class has its own code: 200 and up, so llorch-pool's statuses
    (1-10) pass through, but for 127 and 130, which mean what they mean in a shell."""
    classes: list[type[CtlError]] = [
        ConfigError,
        UnknownPool,
        NameUnresolved,
        ConnectionRefused,
        ConnectTimeout,
        AuthFailed,
        HostKeyUnknown,
        HostKeyChanged,
        SshError,
        ConnectionLost,
        RemoteCommandMissing,
        Interrupted,
        HttpUnreachable,
        ApiFailed,
    ]
    codes = [c.exit_code for c in classes]
    assert len(set(codes)) == len(codes)
    assert all(c >= 200 or c in (127, 130) for c in codes)
    assert (RemoteCommandMissing.exit_code, Interrupted.exit_code) == (127, 130)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["pool", "worker", "spawn", "cpu", "--host", "b", "--model", "m", "--host", "0.0.0.0"],
            RemoteCall(None, "b", ["worker", "spawn", "cpu", "--model", "m", "--host", "0.0.0.0"]),
        ),
        (
            [
                "--config",
                "/x.toml",
                "--debug",
                "pool",
                "backends",
                "--json",
                "--host=b",
                "--accept-new-host-key",
                "--connect-timeout=2.5",
            ],
            RemoteCall(Path("/x.toml"), "b", ["backends", "--json"], True, 2.5),
        ),
        (
            ["pool", "models", "import", "--host", "b", "--", "--help", "f.gguf"],
            RemoteCall(None, "b", ["models", "import", "--help", "f.gguf"]),
        ),
    ],
)
def test_fast_path_parses_valid_remote_lines(args: list[str], expected: RemoteCall) -> None:
    """CTL-032, CTL-020: a valid pool command line is parsed without typer."""
    assert parse_remote_call(args, None) == expected


@pytest.mark.parametrize(
    "args",
    [
        ["pool", "worker", "list"],  # no --host: typer says so
        ["pool", "worker", "list", "--host"],
        ["pool", "worker", "list", "--host", "b", "--help"],
        ["pool", "worker", "list", "--host", "b", "--connect-timeout", "soon"],
        ["pool", "worker", "list", "--host", "b", "--connect-timeout", "0"],
        ["pool", "worker", "bogus", "--host", "b"],
        ["pool", "status"],
        ["--verbose", "pool", "backends", "--host", "b"],
        ["infer", "--worker", "h:1", "--prompt", "x"],
        [],
    ],
)
def test_fast_path_leaves_everything_else_to_typer(args: list[str]) -> None:
    """CTL-032: `--help`, usage errors and every other command go to typer."""
    assert parse_remote_call(args, None) is None


def test_fast_path_reads_llorch_config_but_the_flag_wins() -> None:
    call = parse_remote_call(["pool", "backends", "--host", "b"], "/env.toml")
    assert call is not None and call.config == Path("/env.toml")
    call = parse_remote_call(["--config=/flag.toml", "pool", "backends", "--host", "b"], "/e")
    assert call is not None and call.config == Path("/flag.toml")


@pytest.mark.parametrize(
    "words",
    [
        ["models", "download"],
        ["models", "list"],
        ["models", "rm"],
        ["models", "import"],
        ["models", "verify"],
        ["worker", "spawn"],
        ["worker", "list"],
        ["worker", "stop"],
        ["worker", "logs"],
        ["worker", "cleanup"],
        ["backends"],
    ],
)
def test_every_pool_command_runs_the_same_words_remotely(words: list[str]) -> None:
    """CTL-020: each `llorch pool ...` command becomes `llorch-pool <same words> <same
    arguments>`; a later --connect-timeout and --host, and all after `--`, are llorch-pool's."""
    tail = ["x y", "--connect-timeout", "9", "--json", "--host", "h2", "--", "--help", "--host"]
    args = ["pool", *words, "--connect-timeout", "2", "--host", "b", *tail]
    assert parse_remote_call(args, None) == RemoteCall(
        None,
        "b",
        [*words, "x y", "--connect-timeout", "9", "--json", "--host", "h2", "--help", "--host"],
        False,
        2.0,
    )


def test_pool_status_asks_at_most_16_pools_at_once() -> None:
    """CTL-022: one thread per pool, at most 16. Twenty pools whose transports wait for a
    seventeenth call in flight: sixteen are in flight at once, and the seventeenth never comes
    (the wait gives up after a second). A unit test of the fan-out; the real SSH path is
    test_ssh's pool status test."""
    names = [f"p{i:02d}" for i in range(20)]
    inv = parse_inventory({"pools": {n: {"host": "127.0.0.1"} for n in names}})
    lock = threading.Lock()
    inside, most = 0, 0
    seventeen = threading.Barrier(17, timeout=1.0)
    met: list[bool] = []

    class Held:
        def run(self, argv: Sequence[str], stdout: Sink, stderr: Sink) -> int:
            nonlocal inside, most
            with lock:
                inside += 1
                most = max(most, inside)
            try:
                try:
                    seventeen.wait()
                    met.append(True)
                except threading.BrokenBarrierError:
                    pass
                stdout(b'{"workers": []}')
                return 0
            finally:
                with lock:
                    inside -= 1

    rows = gather_status(inv, names, lambda _target: Held(), timeout=None)
    assert [r.pool for r in rows] == names and all(r.error is None for r in rows), rows
    assert (most, met) == (16, [])
