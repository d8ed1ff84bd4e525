"""A real OpenSSH sshd for tests and bench/ssh.py: keys from ssh-keygen, a config in a temp dir.

Plain functions, no pytest: bench/ssh.py starts the same server the tests use.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support import free_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


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
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def known_hosts_line(self) -> str:
        return f"{self.key_name} {self.host_key_pub}\n"

    def log_text(self) -> str:
        return (self.dir / "sshd.log").read_text(errors="replace")


def sshd_config(
    d: Path, host: str, port: int, authorized: Path, extra: str = "", log_level: str = "VERBOSE"
) -> Path:
    cfg = d / "sshd_config"
    cfg.write_text(
        f"ListenAddress {host}\n"
        f"Port {port}\n"
        f"HostKey {d / 'host_ed25519'}\n"
        f"PidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {authorized}\n"
        "StrictModes no\nUsePAM no\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
        f"MaxStartups 100\nMaxSessions 50\nLogLevel {log_level}\n" + extra
    )
    return cfg


def start_sshd(
    d: Path,
    host: str,
    client_key: Path,
    *,
    prefix: Sequence[str] = (),
    extra_config: str = "",
    log_level: str = "VERBOSE",
) -> Sshd:
    """Start sshd (optionally under `prefix`, e.g. `ip netns exec NS`) listening on host;
    `extra_config` is appended to its sshd_config; it logs to sshd.log at `log_level`."""
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    d.mkdir(parents=True, exist_ok=True)
    host_key = keygen(d / "host_ed25519", "llorch-test-host")
    authorized = d / "authorized_keys"
    authorized.write_text(Path(f"{client_key}.pub").read_text())
    port = 22 if prefix else free_port(host)
    cfg = sshd_config(d, host, port, authorized, extra_config, log_level)
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
