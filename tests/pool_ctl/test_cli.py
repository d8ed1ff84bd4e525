"""The CLI's contract for scripts: one error line on stderr, distinct exit codes, --help."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pool_ctl import procs
from pool_ctl.records import Records, WorkerRecord, check_worker_id
from pool_ctl.settings import Settings
from tests.pool_ctl.helpers import call, pool_env, run_pool, start_pool, worker_record


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["models", "list", "--bogus"], 2, "No such option: --bogus"),
        (
            ["worker", "spawn"],
            2,
            "Missing argument 'backend'; run 'llorch-pool worker spawn --help'",
        ),
        (["worker", "spawn", "gpu", "--model", "x"], 10, "unknown backend 'gpu'"),
        (["worker", "spawn", "cpu", "--model", "x", "--port", "eighty"], 10, "not a number"),
        (["worker", "spawn", "cpu", "--model", "x", "--slots", "0"], 10, "at least 1"),
        (["worker", "stop"], 10, "give a worker id or --all"),
        (["worker", "stop", "w1", "--all"], 10, "give a worker id or --all, not both"),
        (["worker", "stop", "nope"], 3, "no worker 'nope'"),
        (["worker", "stop", "../etc"], 10, "worker id '../etc' is not valid"),
        (
            ["worker", "spawn", "cpu", "--model", "x", "--pool", "<img src=x>"],
            10,
            "pool name '<img src=x>' is not valid",  # POOL-043
        ),
        (["worker", "logs", "nope"], 3, "no worker 'nope'"),
        (["models", "download", "nocolon"], 4, "no ':FILE.gguf' or ':QUANT' part"),
    ],
)
def test_failures_are_one_line_and_a_distinct_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, words: str
) -> None:
    """POOL-005: one line, `llorch-pool: error: <what failed>; <what to do>`, its own exit code;
    POOL-060: stop takes a worker id or --all, never both or neither (exit 10); POOL-043: a
    --pool that is no pool name is refused before anything starts (exit 10)."""
    r = call(["--home", str(tmp_path / "home"), *args], capsys)
    assert r.code == code, r.err
    assert r.err.startswith("llorch-pool: error: ") and r.err.count("\n") == 1
    assert "; " in r.err  # what failed; what to do
    assert words in r.err
    assert r.out == ""


def test_an_internal_error_is_exit_1_and_shows_a_traceback_only_with_debug(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """POOL-005: an unexpected error (here a catalog entry that is not an object) is exit 1 with
    one line that says to rerun with --debug; the traceback only with --debug or LLORCH_DEBUG."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "catalog.json").write_text(json.dumps({"version": 1, "models": {"x": "oops"}}))
    monkeypatch.delenv("LLORCH_DEBUG", raising=False)
    r = call(["--home", str(home), "models", "list"], capsys)
    assert r.code == 1
    assert r.err.count("\n") == 1 and "Traceback" not in r.err
    assert r.err.startswith("llorch-pool: error: unexpected TypeError: ")
    assert r.err.endswith("; rerun with --debug and report it\n")
    r = call(["--home", str(home), "--debug", "models", "list"], capsys)
    assert r.code == 1 and "Traceback" in r.err
    assert r.err.splitlines()[-1].startswith("llorch-pool: error: unexpected TypeError: ")
    monkeypatch.setenv("LLORCH_DEBUG", "1")
    r = call(["--home", str(home), "models", "list"], capsys)
    assert r.code == 1 and "Traceback" in r.err


def _record_for(pid: int, argv: list[str], log: Path) -> WorkerRecord:
    start = procs.start_time(pid)
    assert start is not None
    return worker_record(pid, start, argv, log_path=str(log))


def test_ctrl_c_is_exit_130_with_one_line(tmp_path: Path) -> None:
    """POOL-005: an interrupted run (Ctrl-C, here during `worker logs -f`) is exit 130 and ends
    with one line on stderr."""
    home = tmp_path / "home"
    log = tmp_path / "w1.log"
    log.write_text("first line\n")
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        while procs.cmdline(sleeper.pid) != ["sleep", "60"]:  # empty while exec runs
            time.sleep(0.01)
        Records(Settings.build(home).layout).save(_record_for(sleeper.pid, ["sleep", "60"], log))
        follower = start_pool(["worker", "logs", "w1", "-f"], pool_env(home))
        assert follower.stdout is not None
        assert follower.stdout.readline() == "first line\n"  # it is following now
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=30)
        assert follower.returncode == 130
        assert err.count("\n") == 1 and err.startswith("llorch-pool: error: interrupted"), err
    finally:
        sleeper.kill()
        sleeper.wait()


def test_every_result_command_prints_one_json_document(
    tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """POOL-004: each command that prints a result accepts --json and then prints exactly one
    JSON document on stdout and nothing else (download and spawn: test_download.py,
    test_spawn_settings.py)."""
    base = ["--home", str(tmp_path / "home")]
    commands = [
        ["models", "import", str(tiny_model), "--id", "tiny"],
        ["models", "list"],
        ["models", "verify"],
        ["backends"],
        ["worker", "list"],
        ["worker", "cleanup"],
        ["worker", "stop", "--all"],
        ["models", "rm", "tiny"],
    ]
    for args in commands:
        r = call([*base, *args, "--json"], capsys)
        assert r.code == 0, (args, r.err)
        document = json.loads(r.out)  # one document: anything more is "Extra data"
        assert isinstance(document, dict) and r.out.strip().endswith("}"), args


@pytest.mark.parametrize("good", ["a", "A.b_c-9", "host-8001", "x" * 128])
def test_valid_worker_ids(good: str) -> None:
    """POOL-041: a worker id matches [A-Za-z0-9][A-Za-z0-9._-]{0,127}."""
    assert check_worker_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "-a", ".a", "_a", "a/b", "../etc", "a b", "é", "x" * 129, "a\n", "a:b"]
)
def test_invalid_worker_ids(bad: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """POOL-041: anything else is refused (exit 10) wherever a worker id is given."""
    r = call(["--home", str(tmp_path / "home"), "worker", "stop", "--", bad], capsys)
    assert r.code == 10 and "is not valid" in r.err, r.err


def test_no_command_shows_help(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = call(["--home", str(tmp_path), "worker"], capsys)
    assert r.code == 2 and "spawn" in r.out and "cleanup" in r.out
    r = call(["--help"], capsys)
    assert r.code == 0 and "models" in r.out and "backends" in r.out


def test_the_module_runs_as_a_program(tmp_path: Path) -> None:
    r = run_pool(["worker", "list", "--json"], pool_env(tmp_path / "home"))
    assert (r.code, r.json()) == (0, {"workers": []})
