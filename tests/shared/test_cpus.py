"""Physical cores as llama.cpp counts them (WRK-150): SMT siblings are one core."""

from __future__ import annotations

from pathlib import Path

from shared.cpus import physical_cores
from worker.engine import default_threads


def _topology(root: Path, siblings: dict[int, str]) -> Path:
    for cpu, mask in siblings.items():
        d = root / f"cpu{cpu}/topology"
        d.mkdir(parents=True)
        (d / "thread_siblings").write_text(mask + "\n")
    return root


def test_wrk_150_smt_siblings_count_once_and_only_allowed_cpus_count(tmp_path: Path) -> None:
    """WRK-150: 4 CPUs as 2 cores with 2 threads each are 2 cores; a process allowed on one
    thread of each core still has 2; without SMT every CPU is a core; no topology, CPUs."""
    smt = _topology(tmp_path / "smt", {0: "5", 1: "a", 2: "5", 3: "a"})
    assert physical_cores(smt, {0, 1, 2, 3}) == 2
    assert physical_cores(smt, {0, 1}) == 2
    assert physical_cores(smt, {0, 2}) == 1
    flat = _topology(tmp_path / "flat", {0: "1", 1: "2", 2: "4"})
    assert physical_cores(flat, {0, 1, 2}) == 3
    assert physical_cores(tmp_path / "none", {0, 1}) == 2
    assert physical_cores(tmp_path / "none", set()) == 1


def test_wrk_150_the_workers_default_threads_are_the_physical_cores() -> None:
    """WRK-150: no longer half the CPUs."""
    assert default_threads() == physical_cores()
