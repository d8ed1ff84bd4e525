"""Errors the SDK raises: one class per server error code, built from the problem+json body.

Callers branch on the class or on `code`, never on the message text.
"""

from __future__ import annotations

from typing import Any, ClassVar

import httpx


class LlorchError(Exception):
    """An error reported by orchestratord (or the failure to reach it).

    `status` is the HTTP status (0 when no response arrived), `code` the server's stable error
    code (`QUEUE_FULL`, `INVALID_PARAMS`, ...), `retriable` whether the same call may succeed
    later, `retry_after_ms` the server's hint for when, `detail` the human-readable text and
    `errors` the per-field problems of a 400.
    """

    default_code: ClassVar[str] = "INTERNAL"

    def __init__(
        self,
        detail: str,
        *,
        status: int = 0,
        code: str | None = None,
        retriable: bool = False,
        retry_after_ms: int | None = None,
        errors: list[dict[str, Any]] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status = status
        self.code = code or self.default_code
        self.retriable = retriable
        self.retry_after_ms = retry_after_ms
        self.errors = errors or []
        self.body = body or {}

    def __str__(self) -> str:
        where = f"{self.status} " if self.status else ""
        return f"{where}{self.code}: {self.detail}"


class InvalidParams(LlorchError):
    default_code = "INVALID_PARAMS"


class Unauthorized(LlorchError):
    default_code = "UNAUTHORIZED"


class Forbidden(LlorchError):
    default_code = "FORBIDDEN"


class NotFound(LlorchError):
    default_code = "NOT_FOUND"


class AdmissionReject(LlorchError):
    default_code = "ADMISSION_REJECT"


class QueueFull(LlorchError):
    default_code = "QUEUE_FULL"


class ModelUnavailable(LlorchError):
    default_code = "MODEL_UNAVAILABLE"


class DeadlineUnmet(LlorchError):
    default_code = "DEADLINE_UNMET"


class WorkerReset(LlorchError):
    default_code = "WORKER_RESET"


class Cancelled(LlorchError):
    default_code = "CANCELLED"


class ConnectionFailed(LlorchError):
    """orchestratord could not be reached, or the connection broke for good."""

    default_code = "UNREACHABLE"


_BY_CODE: dict[str, type[LlorchError]] = {
    cls.default_code: cls
    for cls in (
        InvalidParams,
        Unauthorized,
        Forbidden,
        NotFound,
        AdmissionReject,
        QueueFull,
        ModelUnavailable,
        DeadlineUnmet,
        WorkerReset,
        Cancelled,
        ConnectionFailed,
    )
}


def error_for_code(
    code: str,
    detail: str,
    *,
    status: int = 0,
    retriable: bool = False,
    retry_after_ms: int | None = None,
    errors: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> LlorchError:
    """The exception for a server error code; unknown codes give a plain `LlorchError`."""
    cls = _BY_CODE.get(code, LlorchError)
    return cls(
        detail,
        status=status,
        code=code,
        retriable=retriable,
        retry_after_ms=retry_after_ms,
        errors=errors,
        body=body,
    )


def error_from_response(response: httpx.Response) -> LlorchError:
    """Turn a non-2xx response (read already) into the matching exception.

    A problem+json body gives the code, flags and detail; any other body (a proxy's HTML page)
    still gives an exception with the status and a code derived from it.
    """
    body: Any = None
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    detail = body.get("detail") or body.get("title") or response.reason_phrase or "error"
    code = body.get("code")
    if not isinstance(code, str):
        code = _code_for_status(response.status_code)
    retry_after_ms = body.get("retry_after_ms")
    if not isinstance(retry_after_ms, int):
        retry_after_ms = _retry_after_header(response)
    errors = body.get("errors")
    return error_for_code(
        code,
        str(detail),
        status=response.status_code,
        retriable=bool(body.get("retriable", response.status_code in (429, 502, 503))),
        retry_after_ms=retry_after_ms,
        errors=errors if isinstance(errors, list) else None,
        body=body,
    )


def _code_for_status(status: int) -> str:
    return {
        400: "INVALID_PARAMS",
        401: "UNAUTHORIZED",
        403: "FORBIDDEN",
        404: "NOT_FOUND",
        429: "QUEUE_FULL",
        503: "MODEL_UNAVAILABLE",
        504: "DEADLINE_UNMET",
    }.get(status, "INTERNAL")


def _retry_after_header(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after", "")
    return int(value) * 1000 if value.isdigit() else None
