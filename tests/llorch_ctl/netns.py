"""Pool hosts of their own: a network namespace per host, joined to this one by a veth pair.

Addresses come from 10.231.0.0/16, a private test subnet that exists only inside this sandbox:
host i gets 10.231.N.2 in its namespace and 10.231.N.1 on our side of its /30 link. Teardown
kills what still runs inside, then deletes the namespace and the link, even after a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


@dataclass(frozen=True)
class NetHost:
    name: str  # namespace name
    outer_if: str
    addr: str  # the host's own address, inside its namespace
    gateway: str  # our side of the link

    @property
    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


def _free_subnet(seed: int) -> int:
    """A third octet X such that 10.231.X.0/24 is not yet on any interface here."""
    used = ip("-o", "-4", "addr", "show").stdout
    for k in range(250):
        x = 1 + (seed + k) % 250
        if f" 10.231.{x}." not in used:
            return x
    raise RuntimeError("no free 10.231.X.0/24 test subnet left")


def add_route(h: NetHost, dest: str) -> None:
    """Let `h` reach one more of our addresses (another host's gateway) through its link."""
    ip("-n", h.name, "route", "add", f"{dest}/32", "via", h.gateway)


def _kill_inside(ns: str) -> None:
    r = ip("netns", "pids", ns, check=False)
    for pid in r.stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


@contextlib.contextmanager
def net_host(index: int) -> Iterator[NetHost]:
    """Namespace + veth for host `index` (1..3), with loopback up inside."""
    tag = f"{os.getpid() % 100000}{index}"
    subnet = _free_subnet(os.getpid() + index)
    h = NetHost(f"llt{tag}", f"llv{tag}", f"10.231.{subnet}.2", f"10.231.{subnet}.1")
    inner_if = f"llp{tag}"
    try:
        ip("netns", "add", h.name)
        ip("link", "add", h.outer_if, "type", "veth", "peer", "name", inner_if)
        ip("link", "set", inner_if, "netns", h.name)
        ip("addr", "add", f"{h.gateway}/30", "dev", h.outer_if)
        ip("link", "set", h.outer_if, "up")
        ip("-n", h.name, "addr", "add", f"{h.addr}/30", "dev", inner_if)
        ip("-n", h.name, "link", "set", inner_if, "up")
        ip("-n", h.name, "link", "set", "lo", "up")
        yield h
    finally:
        _kill_inside(h.name)
        ip("link", "del", h.outer_if, check=False)
        ip("netns", "del", h.name, check=False)
