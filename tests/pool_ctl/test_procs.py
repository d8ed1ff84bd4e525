from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pool_ctl import procs


def test_identity_is_pid_start_time_and_command_line() -> None:
    """POOL-042: ours only with the recorded start time and command line; anything else is
    reused and never signalled."""
    p = subprocess.Popen(["sleep", "30"])
    try:
        while not procs.cmdline(p.pid):  # empty for a moment while exec runs
            os.sched_yield()
        start = procs.start_time(p.pid)
        assert start is not None
        assert procs.cmdline(p.pid) == ["sleep", "30"]
        assert procs.identify(p.pid, start, ["sleep", "30"]) == "ours"
        assert procs.identify(p.pid, start + 1, ["sleep", "30"]) == "reused"
        assert procs.identify(p.pid, start, ["sleep", "31"]) == "reused"
        # Not ours: no signal is sent, and the process lives on.
        assert procs.signal_if_ours(p.pid, start + 1, ["sleep", "30"], signal.SIGKILL) == "reused"
        assert procs.terminate(p.pid, start, ["sleep", "31"], grace=0.1) == "reused"
        assert p.poll() is None
        assert procs.terminate(p.pid, start, ["sleep", "30"], grace=5.0) == "terminated"
        assert p.wait(timeout=5) == -signal.SIGTERM
        assert procs.identify(p.pid, start, ["sleep", "30"]) == "gone"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_a_process_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    """POOL-060: SIGTERM, the grace period, then SIGKILL."""
    # An ignored signal stays ignored across exec, so this `sleep` shrugs off SIGTERM.
    p = subprocess.Popen(["sh", "-c", "trap '' TERM; exec sleep 30"])
    try:
        while procs.cmdline(p.pid) != ["sleep", "30"]:
            os.sched_yield()
        start = procs.start_time(p.pid)
        assert start is not None
        assert procs.terminate(p.pid, start, ["sleep", "30"], grace=0.3) == "killed"
        assert p.wait(timeout=5) == -signal.SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_zombies_and_missing_pids_are_gone() -> None:
    """POOL-042: a zombie or a missing pid is gone."""
    p = subprocess.Popen(["true"])
    start = procs.start_time(p.pid)
    argv = procs.cmdline(p.pid) or ["true"]
    while procs.state(p.pid) not in ("Z", None):
        os.sched_yield()
    assert procs.identify(p.pid, start or 0, argv) == "gone"
    p.wait()
    assert procs.identify(p.pid, start or 0, argv) == "gone"
    assert procs.start_time(p.pid) is None


def _fake_proc(root: Path, pid: int, state: str, start: int, argv: list[str]) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    # Fields 3.. of /proc/<pid>/stat: state, then 18 others, then field 22 (start time).
    rest = [state, *["0"] * 18, str(start), *["0"] * 30]
    (d / "stat").write_text(f"{pid} (python3 x) " + " ".join(rest) + "\n")
    (d / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))


def test_an_empty_command_line_is_decided_by_the_start_time_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POOL-042: a process caught mid-exec shows an empty command line; then its start time
    alone decides. (A /proc tree in files: the instant cannot be caught on purpose.)"""
    argv = [sys.executable, "-m", "worker", "--port", "8001"]
    _fake_proc(tmp_path, 101, "S", 5000, [])
    _fake_proc(tmp_path, 102, "S", 5000, ["bash"])
    _fake_proc(tmp_path, 103, "Z", 5000, [])
    _fake_proc(tmp_path, 104, "R", 5000, argv)
    monkeypatch.setattr(procs, "PROC", tmp_path)
    assert procs.identify(101, 5000, argv) == "ours"
    assert procs.identify(101, 5001, argv) == "reused"
    assert procs.identify(102, 5000, argv) == "reused"
    assert procs.identify(103, 5000, argv) == "gone"
    assert procs.identify(104, 5000, argv) == "ours"
    assert procs.identify(105, 5000, argv) == "gone"


def test_a_signal_goes_through_a_pidfd_opened_before_the_identity_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POOL-042: the pidfd is opened first, then identity is checked, then the signal is sent
    through that pidfd (never by pid), so a pid recycled in between cannot be hit."""
    p = subprocess.Popen(["sleep", "30"])
    try:
        while procs.cmdline(p.pid) != ["sleep", "30"]:
            os.sched_yield()
        start = procs.start_time(p.pid)
        assert start is not None
        calls: list[tuple[str, int]] = []
        real_open, real_identify = os.pidfd_open, procs.identify
        real_send = signal.pidfd_send_signal

        def pidfd_open(pid: int, flags: int = 0) -> int:
            fd = real_open(pid, flags)
            calls.append(("open", pid))
            return fd

        def identify(pid: int, recorded_start: int, argv: list[str]) -> procs.Identity:
            calls.append(("check", pid))
            return real_identify(pid, recorded_start, argv)

        def send(fd: int, sig: int, *args: object) -> None:
            calls.append(("signal", sig))
            real_send(fd, sig)

        def kill(pid: int, sig: int) -> None:
            raise AssertionError(f"os.kill({pid}, {sig}): signals go through the pidfd")

        monkeypatch.setattr(os, "pidfd_open", pidfd_open)
        monkeypatch.setattr(procs, "identify", identify)
        monkeypatch.setattr(signal, "pidfd_send_signal", send)
        monkeypatch.setattr(os, "kill", kill)
        assert procs.signal_if_ours(p.pid, start + 1, ["sleep", "30"], signal.SIGTERM) == "reused"
        assert calls == [("open", p.pid), ("check", p.pid)]  # checked, not signalled
        calls.clear()
        assert procs.signal_if_ours(p.pid, start, ["sleep", "30"], signal.SIGTERM) == "ours"
        assert calls == [("open", p.pid), ("check", p.pid), ("signal", signal.SIGTERM)]
        assert p.wait(timeout=5) == -signal.SIGTERM
    finally:
        monkeypatch.undo()
        if p.poll() is None:
            p.kill()
            p.wait()


HANDLES_SIGTERM = """
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("ready", flush=True)
time.sleep(60)
"""


def test_a_stopped_process_is_continued_so_it_can_act_on_sigterm() -> None:
    """POOL-060: after SIGTERM comes SIGCONT: a stopped (SIGSTOP) process that handles SIGTERM
    runs its handler and exits within the grace period instead of being killed."""
    argv = [sys.executable, "-c", HANDLES_SIGTERM]
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
        start = procs.start_time(p.pid)
        assert start is not None
        os.kill(p.pid, signal.SIGSTOP)
        while procs.state(p.pid) != "T":
            os.sched_yield()
        assert procs.terminate(p.pid, start, argv, grace=30.0) == "terminated"
        assert p.wait(timeout=5) == 0  # its own handler ended it, not SIGKILL
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if p.stdout is not None:
            p.stdout.close()
