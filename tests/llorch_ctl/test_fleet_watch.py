"""`llorch fleet apply --watch` against a real orchestratord (specs/fleet.md FLT-044, FLT-041):
one pass per interval until interrupted; an unreachable orchestratord is one clear error."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from llorch_ctl.errors import HttpUnreachable
from llorch_ctl.fleet import FleetApi, apply_loop
from tests.llorch_ctl.conftest import LLORCH
from tests.support import free_port, wait_http_ready


@pytest.fixture
def orchd(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestratord", "--port", str(port), "--state-dir",
         str(tmp_path / "s")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_http_ready(url + "/health", proc)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class Stop(Exception):
    pass


def _no_pool(pool: str, argv: Sequence[str]) -> tuple[int, str, str]:
    raise AssertionError(f"ran {argv} on {pool}")


def test_flt_044_watch_repeats_until_interrupted(orchd: str) -> None:
    """FLT-044: --watch reads the plan again every interval; nothing to do each time."""
    lines: list[str] = []
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        if len(sleeps) == 3:
            raise Stop

    api = FleetApi(orchd, None)
    with pytest.raises(Stop):
        apply_loop(api, _no_pool, orchestrator_url=orchd, bind_host=str, dry_run=False,
                   watch=True, interval_s=0.25, echo=lines.append, sleep=sleep)  # fmt: skip
    api.close()
    assert lines == ["nothing to do: the fleet matches the plan"] * 3
    assert sleeps == [0.25] * 3


def test_flt_041_unreachable_orchestratord_is_one_line(tmp_path: Path) -> None:
    """FLT-041: no orchestratord: one line on stderr and llorch's own exit code."""
    api = FleetApi(f"http://127.0.0.1:{free_port()}", None, timeout=2)
    with pytest.raises(HttpUnreachable):
        api.plan()
    api.close()
    cfg = tmp_path / "config.toml"
    cfg.write_text("")
    done = subprocess.run(
        [*LLORCH, "--config", str(cfg), "fleet", "apply", "--orchestrator-url",
         f"http://127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == HttpUnreachable.exit_code
    assert (
        done.stderr.startswith("llorch: cannot reach orchestratord")
        and done.stderr.count("\n") == 1
    )
