"""Processes by identity, not by pid: a pid plus its start time and command line.

The kernel reuses pids. A record's pid only names our worker while /proc/<pid>/stat field 22
(start time in clock ticks after boot) and /proc/<pid>/cmdline still match what was recorded at
spawn; otherwise the process is someone else's and must never be signalled. Signals go through a
pidfd opened before the identity check, so the pid cannot be recycled between check and kill.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Literal

Identity = Literal["ours", "gone", "reused"]

PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # Field 2 (comm) is in parentheses and may hold spaces or ')': split after the last ')'.
    rest = raw[raw.rfind(")") + 2 :].split()
    return [raw[: raw.find(" ")], "comm", *rest]


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat, or None when there is no such process."""
    fields = _stat_fields(pid)
    return int(fields[21]) if fields else None


def state(pid: int) -> str | None:
    fields = _stat_fields(pid)
    return fields[2] if fields else None


def cmdline(pid: int) -> list[str] | None:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return [a.decode(errors="surrogateescape") for a in raw.split(b"\0")[:-1]]


def identify(pid: int, recorded_start: int, recorded_cmdline: Sequence[str]) -> Identity:
    """Whether `pid` is still the process recorded at spawn, gone, or reused by another one."""
    fields = _stat_fields(pid)
    if fields is None or fields[2] in ("Z", "X"):
        # A zombie has exited; its parent (often init, since workers are detached) reaps it.
        return "gone"
    if int(fields[21]) != recorded_start:
        return "reused"
    argv = cmdline(pid)
    # An empty command line is a process caught mid-exec (or a kernel thread, whose start time
    # already differs): the start time alone decides then.
    if argv and argv != list(recorded_cmdline):
        return "reused"
    return "ours"


@contextlib.contextmanager
def _pidfd(pid: int) -> Iterator[int | None]:
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        yield None
        return
    try:
        yield fd
    finally:
        os.close(fd)


def signal_if_ours(
    pid: int, recorded_start: int, recorded_cmdline: Sequence[str], sig: int
) -> Identity:
    """Send `sig` only if `pid` is still our process; say what it was."""
    with _pidfd(pid) as fd:
        if fd is None:
            return "gone"
        # The pidfd pins this exact process: if identity holds now, the signal reaches it.
        who = identify(pid, recorded_start, recorded_cmdline)
        if who == "ours":
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, sig)
        return who


def wait_gone(
    pid: int, recorded_start: int, recorded_cmdline: Sequence[str], timeout: float
) -> bool:
    """Poll until the process is no longer ours (exited); True if it went within `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        if identify(pid, recorded_start, recorded_cmdline) != "ours":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def terminate(
    pid: int, recorded_start: int, recorded_cmdline: Sequence[str], grace: float
) -> Literal["terminated", "killed", "gone", "reused"]:
    """SIGTERM, wait `grace` seconds, then SIGKILL; never touches a process that is not ours."""
    who = signal_if_ours(pid, recorded_start, recorded_cmdline, signal.SIGTERM)
    if who != "ours":
        return who
    # A stopped (SIGSTOP) process only acts on SIGTERM once continued.
    signal_if_ours(pid, recorded_start, recorded_cmdline, signal.SIGCONT)
    if wait_gone(pid, recorded_start, recorded_cmdline, grace):
        return "terminated"
    signal_if_ours(pid, recorded_start, recorded_cmdline, signal.SIGKILL)
    wait_gone(pid, recorded_start, recorded_cmdline, 10.0)
    return "killed"
