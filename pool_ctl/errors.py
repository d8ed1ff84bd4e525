"""Every failure llorch-pool reports on purpose, each with its own exit code.

The CLI renders a `PoolError` once, as one line on stderr: what failed, then what to do. The exit
codes are part of the contract (specs/pool.md, POOL-002); scripts such as the operator CLI branch
on them, never on the message text.
"""

from __future__ import annotations

from typing import ClassVar


class PoolError(Exception):
    """Base of the failures the CLI reports as one line and a non-zero exit code."""

    exit_code: ClassVar[int] = 1
    code: ClassVar[str] = "INTERNAL"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class NotFound(PoolError):
    """A model or worker id that the catalog or the worker records do not hold."""

    exit_code, code = 3, "NOT_FOUND"


class BadReference(PoolError):
    """A model reference that is malformed, matches nothing, or matches more than one file."""

    exit_code, code = 4, "BAD_REFERENCE"


class HubError(PoolError):
    """The Hugging Face hub (or its mirror) failed or refused: network, auth, missing repo."""

    exit_code, code = 5, "HUB_ERROR"


class BackendUnavailable(PoolError):
    exit_code, code = 6, "BACKEND_UNAVAILABLE"


class Conflict(PoolError):
    """A port in use, a worker id or model id already taken by something else."""

    exit_code, code = 7, "CONFLICT"


class WorkerFailed(PoolError):
    """A spawned worker exited or did not become ready in time."""

    exit_code, code = 8, "WORKER_FAILED"


class IntegrityError(PoolError):
    """A model file is missing, unreadable as GGUF, or its sha256 differs from the record."""

    exit_code, code = 9, "INTEGRITY"


class InvalidInput(PoolError):
    """An argument the CLI parser accepted but whose value makes no sense."""

    exit_code, code = 10, "INVALID_INPUT"
