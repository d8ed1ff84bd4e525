"""`llorch fleet apply --watch` against a real orchestratord (specs/fleet.md FLT-044, FLT-041;
specs/ctl.md CTL-102): one pass per interval until interrupted; an unreachable orchestratord is
one clear error; pools' memory reports before placing."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from llorch_ctl.errors import HttpUnreachable
from llorch_ctl.fleet import PROBE_FRESH_S, FleetApi, Probes, apply_loop, probe_pools
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


def test_ctl_102_memory_probes_place_the_replica_and_stay_fresh(orchd: str) -> None:
    """CTL-102, FLT-066: before a spawn, apply asks each desired pool for its memory
    (`llorch-pool backends --memory`) and sends it; the plan then places the replica where it
    fits (b: a has too little free RAM). A report younger than PROBE_FRESH_S is not made
    again; a pool where a replica started is asked again; an idle --watch pass refreshes
    the stalest pool only."""
    fleet = {"models": {"m": {"source": "catalog:m", "pools": ["a", "b"]}}}
    assert httpx.put(orchd + "/v2/fleet", json=fleet).status_code == 200
    free = {"a": 10 << 20, "b": 8 << 30}
    asked: list[str] = []

    def pool(name: str, argv: Sequence[str]) -> tuple[int, str, str]:
        assert list(argv) == ["backends", "--memory"]
        asked.append(name)
        report = {
            "memory": {"ram_total_bytes": 16 << 30, "ram_free_bytes": free[name],
                       "vram_total_bytes": None, "vram_free_bytes": None},
            "models": {"m": {"size_bytes": 100 << 20, "kv_bytes_per_token": 1000,
                             "context_length": 2048}},
        }  # fmt: skip
        return 0, json.dumps(report), ""

    clock = [1000.0]
    api = FleetApi(orchd, None)
    probes = Probes()
    before = api.plan()
    assert [a["id"] for a in before["actions"]] == ["ensure_model:m@a", "spawn:m.a.0"]
    sent, catalogs = probe_pools(before, api, pool, None, print, probes, now=lambda: clock[0])
    assert sent and asked == ["a", "b"] and catalogs == {"a": {"m"}, "b": {"m"}}
    after = api.plan()
    assert [a["id"] for a in after["actions"]] == ["ensure_model:m@b", "spawn:m.b.0"]
    assert "passed over a: needs" in after["actions"][1]["reason"]
    clock[0] += PROBE_FRESH_S / 2
    assert probe_pools(after, api, pool, None, print, probes, now=lambda: clock[0])[0] is False
    assert asked == ["a", "b"]
    probes.forget("b")
    probe_pools(after, api, pool, None, print, probes, now=lambda: clock[0])
    assert asked == ["a", "b", "b"]
    idle = {**after, "actions": []}
    clock[0] += PROBE_FRESH_S
    probe_pools(idle, api, pool, None, print, probes, now=lambda: clock[0], refresh_one=True)
    assert asked == ["a", "b", "b", "a"]  # the stalest of the two, alone
    api.close()
