from __future__ import annotations

import os
import signal
import subprocess

from pool_ctl import procs


def test_identity_is_pid_start_time_and_command_line() -> None:
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
    p = subprocess.Popen(["true"])
    start = procs.start_time(p.pid)
    argv = procs.cmdline(p.pid) or ["true"]
    while procs.state(p.pid) not in ("Z", None):
        os.sched_yield()
    assert procs.identify(p.pid, start or 0, argv) == "gone"
    p.wait()
    assert procs.identify(p.pid, start or 0, argv) == "gone"
    assert procs.start_time(p.pid) is None
