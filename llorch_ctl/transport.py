"""Running one remote command over SSH: the `Transport` seam and its paramiko implementation.

Safety rules kept here: the server's host key must match known_hosts (an unknown key is refused
unless the operator opted in, and then saved; a changed key is always refused), every argument
is shell-quoted, and each way a connection can fail maps to its own `CtlError` class, by
exception type, never by message text.
"""

from __future__ import annotations

import errno
import select
import shlex
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, cast

import paramiko
from paramiko.hostkeys import InvalidHostKey

from llorch_ctl.errors import (
    AuthFailed,
    ConfigError,
    ConnectionLost,
    ConnectionRefused,
    ConnectTimeout,
    CtlError,
    HostKeyChanged,
    HostKeyUnknown,
    NameUnresolved,
    SshError,
)
from llorch_ctl.inventory import SshTarget

Sink = Callable[[bytes], None]
CHUNK = 32768


class Transport(Protocol):
    """Runs an argv on a remote host, streaming its output; returns the remote exit status."""

    def run(self, argv: Sequence[str], stdout: Sink, stderr: Sink) -> int: ...


def remote_command_line(pool_cmd: str, argv: Sequence[str], env: Mapping[str, str]) -> str:
    """The line the remote POSIX shell runs.

    `pool_cmd` is operator-written shell text from the inventory (so `~/bin/llorch-pool` and
    `cd X && llorch-pool` work); every argument and env value is quoted, so nothing the
    command line carries is ever interpreted by the remote shell.
    """
    prefix = ""
    if env:
        prefix = "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " "
    return prefix + " ".join([pool_cmd, *(shlex.quote(a) for a in argv)])


class _KnownHostsPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for hosts with no key in known_hosts (a mismatch never gets here)."""

    def __init__(self, target: SshTarget, accept_new: bool) -> None:
        self.target = target
        self.accept_new = accept_new

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        fp = key.fingerprint
        if not self.accept_new:
            raise HostKeyUnknown(
                f"host key of {hostname} ({fp}) is not in {self.target.known_hosts}; check it"
                " and rerun with --accept-new-host-key to trust and save it"
            )
        append_known_host(self.target.known_hosts, hostname, key)


def append_known_host(path: Path, name: str, key: paramiko.PKey) -> None:
    """Append one OpenSSH known_hosts line, creating ~/.ssh-like parents private."""
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fresh = not path.exists()
        with path.open("a", encoding="ascii") as f:
            if fresh:
                path.chmod(0o600)
            f.write(f"{name} {key.get_name()} {key.get_base64()}\n")
    except OSError as e:
        raise ConfigError(f"cannot save host key to {path}: {e}") from e


def load_known_hosts(client: paramiko.SSHClient, path: Path, *, system: bool = False) -> None:
    """Load one known_hosts file into `client`; a file or line paramiko cannot read is a
    ConfigError naming the file and the line (CTL-041), not a traceback."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read known_hosts {path}: {e.strerror or e}") from e
    try:
        raw.decode("utf-8")  # paramiko reads it as text: find a bad byte's line first
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise _bad_known_hosts(path, line, "it is not UTF-8 text") from e
    try:
        if system:
            client.load_system_host_keys(str(path))
        else:
            client.load_host_keys(str(path))
    except InvalidHostKey as e:
        bad = e.line.strip()
        lines = [ln.strip() for ln in raw.decode("utf-8").splitlines()]
        number = lines.index(bad) + 1 if bad in lines else None
        why = (
            "paramiko does not support @cert-authority or @revoked lines"
            if bad.startswith("@")
            else f"its key is not valid base64 ({e.exc})"
        )
        raise _bad_known_hosts(path, number, why) from e
    except (OSError, ValueError, paramiko.SSHException) as e:
        raise _bad_known_hosts(path, None, str(e) or type(e).__name__) from e


def _bad_known_hosts(path: Path, line: int | None, why: str) -> ConfigError:
    if line is None:
        return ConfigError(f"cannot read known_hosts {path}: {why}; fix the file")
    return ConfigError(f"cannot read known_hosts {path} line {line}: {why}; fix or delete it")


def _tcp_connect(t: SshTarget) -> socket.socket:
    where = f"{t.hostname}:{t.port} (pool {t.pool!r})"
    try:
        infos = socket.getaddrinfo(t.hostname, t.port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise NameUnresolved(
            f"cannot resolve host name {t.hostname!r} of pool {t.pool!r} ({e.strerror}): check"
            " the pool's host in the inventory, or its HostName in ~/.ssh/config"
        ) from e
    last: OSError | None = None
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(t.connect_timeout)
        try:
            sock.connect(addr)
            return sock
        except TimeoutError as e:
            sock.close()
            raise ConnectTimeout(f"no answer from {where} within {t.connect_timeout:g}s") from e
        except OSError as e:
            sock.close()
            last = e
    if last is not None and last.errno == errno.ECONNREFUSED:
        raise ConnectionRefused(f"connection refused by {where}: is sshd running on that port?")
    reason = last.strerror if last is not None and last.strerror else "no usable address"
    raise ConnectionRefused(f"cannot connect to {where}: {reason}")


def _handshake_error(t: SshTarget, e: paramiko.SSHException, elapsed: float) -> CtlError:
    # paramiko reports a silent server either as an SSHException whose implicit context is the
    # socket timeout (banner) or, when start_client's own deadline passes first, as a later
    # "no session" SSHException; both are a timeout, told apart by type and the clock.
    if isinstance(e.__context__, TimeoutError) or elapsed >= t.connect_timeout:
        return ConnectTimeout(
            f"{t.hostname}:{t.port} (pool {t.pool!r}) accepted TCP but did not complete the SSH"
            f" handshake within {t.connect_timeout:g}s"
        )
    return SshError(f"SSH with {t.hostname}:{t.port} (pool {t.pool!r}) failed: {e}")


def _stuck_at_login(t: paramiko.Transport | None) -> bool:
    """True when the key exchange finished (server key known) but login did not."""
    if t is None or not t.is_active() or t.is_authenticated():
        return False
    try:
        t.get_remote_server_key()
    except paramiko.SSHException:
        return False
    return True


def _login_unanswered(t: paramiko.Transport | None) -> bool:
    """True when the server never answered our last login request (paramiko's auth timeout,
    which it raises as the same AuthenticationException as a rejection)."""
    handler = t.auth_handler if t is not None else None
    event = handler.auth_event if handler is not None else None
    return t is not None and t.is_active() and event is not None and not event.is_set()


class ParamikoTransport:
    """One SSH connection per `run`, checked against known_hosts, via paramiko."""

    def __init__(self, target: SshTarget, *, accept_new_host_key: bool = False) -> None:
        self.target = target
        self.accept_new_host_key = accept_new_host_key

    def connect(self) -> paramiko.SSHClient:
        t = self.target
        client = paramiko.SSHClient()
        system = Path("/etc/ssh/ssh_known_hosts")
        if system.is_file():
            load_known_hosts(client, system, system=True)
        if t.known_hosts.is_file():
            load_known_hosts(client, t.known_hosts)
        client.set_missing_host_key_policy(_KnownHostsPolicy(t, self.accept_new_host_key))
        sock: socket.socket | paramiko.ProxyCommand
        if t.proxy_command:
            try:
                sock = paramiko.ProxyCommand(t.proxy_command)
            except (OSError, ValueError) as e:
                raise ConfigError(f"cannot start ProxyCommand {t.proxy_command!r}: {e}") from e
        else:
            sock = _tcp_connect(t)
        started = time.monotonic()
        try:
            client.connect(
                t.hostname,
                port=t.port,
                username=t.user,
                # paramiko takes a list here; its stub only says str.
                key_filename=cast("str", [str(p) for p in t.identity_files] or None),
                timeout=t.connect_timeout,
                banner_timeout=t.connect_timeout,
                auth_timeout=t.connect_timeout,
                allow_agent=True,
                look_for_keys=not t.identity_files,
                sock=sock,
            )
        except CtlError:
            client.close()
            raise
        except paramiko.BadHostKeyException as e:
            client.close()
            raise HostKeyChanged(
                f"HOST KEY CHANGED for {t.host_key_name}: it now offers {e.key.fingerprint},"
                f" known_hosts {t.known_hosts} has {e.expected_key.fingerprint}. Someone may be"
                " intercepting the connection; refusing. If the host was really reinstalled,"
                f" remove its line (ssh-keygen -R '{t.host_key_name}' -f {t.known_hosts})"
            ) from e
        except paramiko.PasswordRequiredException as e:
            client.close()
            raise AuthFailed(
                f"identity for pool {t.pool!r} is passphrase-protected: load it into ssh-agent"
            ) from e
        except paramiko.AuthenticationException as e:
            unanswered = _login_unanswered(client.get_transport())
            client.close()
            if unanswered:
                raise ConnectTimeout(
                    f"{t.user}@{t.hostname}:{t.port} (pool {t.pool!r}) did not answer our login"
                    f" within {t.connect_timeout:g}s"
                ) from e
            raise AuthFailed(
                f"{t.user}@{t.hostname}:{t.port} (pool {t.pool!r}) rejected our keys: check"
                " identity_file / ssh-agent and the host's authorized_keys"
            ) from e
        except paramiko.SSHException as e:
            logged_out = _stuck_at_login(client.get_transport())
            client.close()
            if logged_out:
                # The handshake succeeded; paramiko had no key to offer at all.
                raise AuthFailed(
                    f"no key to offer to {t.user}@{t.hostname}:{t.port} (pool {t.pool!r}): set"
                    " identity_file or load a key into ssh-agent"
                ) from e
            raise _handshake_error(t, e, time.monotonic() - started) from e
        except TimeoutError as e:
            client.close()
            raise ConnectTimeout(
                f"{t.hostname}:{t.port} (pool {t.pool!r}) timed out during the SSH handshake"
            ) from e
        except OSError as e:
            client.close()
            raise SshError(f"SSH with {t.hostname}:{t.port} (pool {t.pool!r}) failed: {e}") from e
        return client

    def run(self, argv: Sequence[str], stdout: Sink, stderr: Sink) -> int:
        t = self.target
        client = self.connect()
        try:
            transport = client.get_transport()
            if transport is None:
                raise ConnectionLost(f"SSH connection to pool {t.pool!r} closed right after login")
            transport.set_keepalive(t.keepalive_s)
            try:
                chan = transport.open_session(timeout=t.connect_timeout)
                chan.exec_command(remote_command_line(t.pool_cmd, argv, t.env))
                chan.shutdown_write()
            except paramiko.SSHException as e:
                raise SshError(f"pool {t.pool!r}: cannot start the remote command: {e}") from e
            _pump(chan, stdout, stderr)
            status = chan.recv_exit_status()
            if status < 0:
                raise ConnectionLost(
                    f"pool {t.pool!r}: the session ended without an exit status (connection"
                    " lost, or the remote command was killed by a signal)"
                )
            return status
        finally:
            client.close()


def _pump(chan: paramiko.Channel, stdout: Sink, stderr: Sink) -> None:
    """Forward both streams chunk by chunk as they arrive, until the remote closes both."""
    chan.settimeout(0.0)
    out_eof = err_eof = False
    while not (out_eof and err_eof):
        select.select([chan], [], [], 1.0)
        got = False
        if not out_eof:
            try:
                data = chan.recv(CHUNK)
            except TimeoutError:
                pass
            else:
                got = True
                if data:
                    stdout(data)
                else:
                    out_eof = True
        if not err_eof:
            try:
                data = chan.recv_stderr(CHUNK)
            except TimeoutError:
                pass
            else:
                got = True
                if data:
                    stderr(data)
                else:
                    err_eof = True
        if not got:
            # One stream at EOF keeps the select pipe readable; do not spin on it.
            time.sleep(0.01)
