"""Fixtures: a real OpenSSH sshd on loopback, and inventories that point the real `llorch` at it."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.llorch_ctl.netns import NetHost, add_route, net_host
from tests.llorch_ctl.sshd import SSHD, Sshd, keygen, start_sshd, stop_sshd
from tests.support import free_port, require, spawn

LLORCH = [sys.executable, "-m", "llorch_ctl"]


def start_test_sshd(d: Path, host: str, client_key: Path, **options: Any) -> Sshd:
    """CTL-050: start_sshd (its keyword options passed on), skipping (or failing under
    LLORCH_TEST_STRICT=1) where sshd is missing."""
    require(Path(SSHD).exists(), "OpenSSH sshd is not installed (apt-get install openssh-server)")
    require(shutil.which("ssh-keygen") is not None, "ssh-keygen is not installed")
    return start_sshd(d, host, client_key, **options)


@dataclass
class PoolHosts:
    """Two pool hosts, each in its own network namespace with its own sshd; `orch_addr` is our
    side of host 1's link (where orchestratord listens), which host 2 has a route to."""

    hosts: dict[str, NetHost]
    sshds: dict[str, Sshd]
    orch_addr: str


def two_pool_hosts(stack: contextlib.ExitStack, tmp: Path, client_key: Path) -> PoolHosts:
    """Hosts h1 and h2 for the multi-host tests, torn down with `stack`."""
    require(os.geteuid() == 0, "network namespaces need root")
    require(shutil.which("ip") is not None, "iproute2 (`ip`) is not installed")
    hosts = {f"h{i}": stack.enter_context(net_host(i)) for i in (1, 2)}
    orch_addr = hosts["h1"].gateway
    add_route(hosts["h2"], orch_addr)
    sshds: dict[str, Sshd] = {}
    for name, h in hosts.items():
        s = start_test_sshd(tmp / f"sshd-{name}", h.addr, client_key, prefix=h.exec_prefix)
        stack.callback(stop_sshd, s)
        sshds[name] = s
    return PoolHosts(hosts, sshds, orch_addr)


@contextlib.contextmanager
def orchestratord_on(addr: str, tmp: Path, *args: str) -> Iterator[str]:
    """A real orchestratord listening only on `addr`, its state in `tmp`; yields its URL."""
    port = free_port(addr)
    argv = ["orchestratord", "--host", addr, "--port", str(port), "--state-dir", str(tmp / "orchd")]
    with spawn([*argv, *args], port, tmp / "orchd.log", "/health", host=addr) as proc:
        yield proc.url


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require(shutil.which("ssh-keygen") is not None, "ssh-keygen is not installed")
    return keygen(tmp_path_factory.mktemp("client") / "id_ed25519")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory, client_key: Path) -> Iterator[Sshd]:
    """A real OpenSSH sshd on 127.0.0.1 that admits `client_key`, for the whole session."""
    server = start_test_sshd(tmp_path_factory.mktemp("sshd"), "127.0.0.1", client_key)
    yield server
    stop_sshd(server)


def toml_str(s: str | Path) -> str:
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Ctl:
    """An inventory + known_hosts in a temp dir, and a way to run the real `llorch` on it."""

    dir: Path
    config: Path
    known_hosts: Path

    def run(
        self, *args: str, timeout: float = 60, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LLORCH, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **(env or {})},
        )


def write_inventory(
    d: Path,
    pools: dict[str, dict[str, object]],
    *,
    known_hosts: Path | None = None,
    extra: str = "",
) -> Ctl:
    """pools: name -> {host, port, user, identity_file, pool_cmd, env}."""
    kh = known_hosts or d / "known_hosts"
    lines = [f"known_hosts = {toml_str(kh)}", f"ssh_config = {toml_str(d / 'ssh_config')}", extra]
    for name, p in pools.items():
        lines.append(f"[pools.{name}]")
        for k, v in p.items():
            if isinstance(v, dict):
                inner = ", ".join(f"{ek} = {toml_str(str(ev))}" for ek, ev in v.items())
                lines.append(f"{k} = {{ {inner} }}")
            elif isinstance(v, int):
                lines.append(f"{k} = {v}")
            else:
                lines.append(f"{k} = {toml_str(str(v))}")
    cfg = d / "config.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return Ctl(d, cfg, kh)


def pool_for(s: Sshd, pool_cmd: str, **extra: object) -> dict[str, object]:
    return {
        "host": s.host,
        "port": s.port,
        "user": getpass.getuser(),
        "identity_file": str(s.client_key),
        "pool_cmd": pool_cmd,
        **extra,
    }
