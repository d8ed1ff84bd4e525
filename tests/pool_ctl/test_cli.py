"""The CLI's contract for scripts: one error line on stderr, distinct exit codes, --help."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pool_ctl.helpers import call, pool_env, run_pool


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
        (["worker", "stop", "nope"], 3, "no worker 'nope'"),
        (["worker", "stop", "../etc"], 10, "worker id '../etc' is not valid"),
        (["worker", "logs", "nope"], 3, "no worker 'nope'"),
        (["models", "download", "nocolon"], 4, "no ':FILE.gguf' or ':QUANT' part"),
    ],
)
def test_failures_are_one_line_and_a_distinct_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], code: int, words: str
) -> None:
    r = call(["--home", str(tmp_path / "home"), *args], capsys)
    assert r.code == code, r.err
    assert r.err.startswith("llorch-pool: error: ") and r.err.count("\n") == 1
    assert words in r.err
    assert r.out == ""


def test_no_command_shows_help(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    r = call(["--home", str(tmp_path), "worker"], capsys)
    assert r.code == 2 and "spawn" in r.out and "cleanup" in r.out
    r = call(["--help"], capsys)
    assert r.code == 0 and "models" in r.out and "backends" in r.out


def test_the_module_runs_as_a_program(tmp_path: Path) -> None:
    r = run_pool(["worker", "list", "--json"], pool_env(tmp_path / "home"))
    assert (r.code, r.json()) == (0, {"workers": []})
