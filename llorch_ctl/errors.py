"""The failures the operator's CLI reports: one class per cause, each with its own exit code.

`cli.main` renders any `CtlError` as one line on stderr and exits with `exit_code`. Codes 200
and up are llorch's own, so they never collide with a remote llorch-pool's exit status, which
`llorch pool ...` passes through unchanged. The table lives in specs/ctl.md (CTL-EXIT-*).
"""

from __future__ import annotations

from typing import ClassVar


class CtlError(Exception):
    """Base of every failure `llorch` reports on purpose."""

    exit_code: ClassVar[int] = 1
    kind: ClassVar[str] = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(CtlError):
    """The inventory (or a file it names) is missing, unreadable or invalid."""

    exit_code = 200
    kind = "config"


class UnknownPool(CtlError):
    exit_code = 201
    kind = "unknown-pool"


class NameUnresolved(CtlError):
    exit_code = 202
    kind = "name-unresolved"


class ConnectionRefused(CtlError):
    """TCP connect was refused, or the host or network is unreachable."""

    exit_code = 203
    kind = "connection-refused"


class ConnectTimeout(CtlError):
    """No TCP connection, SSH banner or handshake within the connect timeout."""

    exit_code = 204
    kind = "timeout"


class AuthFailed(CtlError):
    exit_code = 205
    kind = "auth-failed"


class HostKeyUnknown(CtlError):
    exit_code = 206
    kind = "host-key-unknown"


class HostKeyChanged(CtlError):
    exit_code = 207
    kind = "host-key-changed"


class SshError(CtlError):
    """Any other SSH protocol failure (no common algorithm, a broken handshake, ...)."""

    exit_code = 208
    kind = "ssh"


class ConnectionLost(CtlError):
    """The session ended without an exit status (connection dropped or command killed)."""

    exit_code = 209
    kind = "connection-lost"


class RemoteCommandMissing(CtlError):
    """The remote shell could not find the pool command (its exit status 127)."""

    exit_code = 127
    kind = "remote-command-missing"


class Interrupted(CtlError):
    """The operator pressed Ctrl-C; the SSH session was closed."""

    exit_code = 130
    kind = "interrupted"


class HttpUnreachable(CtlError):
    """orchestratord or a worker could not be reached over HTTP."""

    exit_code = 210
    kind = "http-unreachable"


class ApiFailed(CtlError):
    """An HTTP API answered with an error (problem+json) or a stream ended in an error event.
    `status` and `code` (the problem's HTTP status and its `code`, when an HTTP answer said
    them) are what a caller tells errors apart by, never the message's text (CTL-111)."""

    exit_code = 211
    kind = "api-error"

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
