"""A real OpenSSH sshd on loopback, keys made with ssh-keygen, and inventories pointing at it."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port, require

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
LLORCH = [sys.executable, "-m", "llorch_ctl"]


def keygen(path: Path, comment: str = "llorch-test") -> Path:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
    )
    return path


def wait_banner(host: str, port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            with socket.create_connection((host, port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"sshd on {host}:{port} sent no banner:\n{log.read_text()[-2000:]}")


@dataclass
class Sshd:
    """One running sshd: where it listens, its host key line, and a key it lets in."""

    host: str
    port: int
    dir: Path
    host_key_pub: str  # "ssh-ed25519 AAAA..."
    client_key: Path
    proc: subprocess.Popen[bytes]

    @property
    def key_name(self) -> str:
        return f"[{self.host}]:{self.port}"

    def known_hosts_line(self) -> str:
        return f"{self.key_name} {self.host_key_pub}\n"

    def log_text(self) -> str:
        return (self.dir / "sshd.log").read_text(errors="replace")


def sshd_config(d: Path, host: str, port: int, authorized: Path) -> Path:
    cfg = d / "sshd_config"
    cfg.write_text(
        f"ListenAddress {host}\n"
        f"Port {port}\n"
        f"HostKey {d / 'host_ed25519'}\n"
        f"PidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        "MaxStartups 100\nMaxSessions 50\nLogLevel VERBOSE\n"
    )
    return cfg


def start_sshd(d: Path, host: str, client_key: Path, *, prefix: Sequence[str] = ()) -> Sshd:
    """Start sshd (optionally under `prefix`, e.g. `ip netns exec NS`) listening on host."""
    require(Path(SSHD).exists(), "OpenSSH sshd is not installed (apt-get install openssh-server)")
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    host_key = keygen(d / "host_ed25519", "llorch-test-host")
    authorized = d / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    port = 22 if prefix else free_port(host)
    cfg = sshd_config(d, host, port, authorized)
    log = d / "sshd.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [*prefix, SSHD, "-D", "-e", "-f", str(cfg)], stdout=out, stderr=subprocess.STDOUT
        )
    kind, b64 = Path(f"{host_key}.pub").read_text().split()[:2]
    server = Sshd(host, port, d, f"{kind} {b64}", client_key, proc)
    try:
        wait_banner(host, port, proc, log)
    except Exception:
        stop_sshd(server)
        raise
    return server


def stop_sshd(s: Sshd) -> None:
    if s.proc.poll() is None:
        s.proc.terminate()
        try:
            s.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            s.proc.kill()
            s.proc.wait(timeout=10)


@pytest.fixture(scope="session")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return keygen(tmp_path_factory.mktemp("client") / "id_ed25519")


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory, client_key: Path) -> Iterator[Sshd]:
    """A real OpenSSH sshd on 127.0.0.1 that admits `client_key`, for the whole session."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"), "127.0.0.1", client_key)
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
