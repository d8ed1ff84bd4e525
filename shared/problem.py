"""The one error shape of llorch's HTTP APIs: RFC 9457 problem+json with `code` and `retriable`.

Each daemon raises subclasses of `ApiError`; `install_problem_handlers` renders every error,
Starlette's own 404/405 and unexpected exceptions included, in this shape. Errors are classified
by class, never by message text. A daemon that adds members for some paths (orchestratord's
`/v1`) passes its `Render` to the handlers and to the middleware that answer before them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypedDict

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("llorch.http")


class FieldError(TypedDict):
    field: str
    message: str


class ApiError(Exception):
    """Base of every error an API returns on purpose."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "INTERNAL"
    title: ClassVar[str] = "Internal error"
    retriable: ClassVar[bool] = False
    # The `code` of OpenAI's error shape on /v1 where OpenAI has its own (else `code`).
    openai_code: ClassVar[str | None] = None

    def __init__(
        self,
        detail: str,
        *,
        retry_after_ms: int | None = None,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.retry_after_ms = retry_after_ms
        self.errors = errors or []
        self.headers = headers or {}

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"https://llorch.dev/problems/{self.code.lower().replace('_', '-')}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
            "retriable": self.retriable,
        }
        if instance:
            body["instance"] = instance
        if self.retry_after_ms is not None:
            body["retry_after_ms"] = self.retry_after_ms
        if self.errors:
            body["errors"] = self.errors
        return body

    def response(
        self, instance: str | None = None, members: Mapping[str, Any] | None = None
    ) -> Response:
        """The problem+json reply; `members` are added to the body (OpenAI's `error`)."""
        headers = dict(self.headers)
        if self.retry_after_ms is not None:
            headers["Retry-After"] = str(max(1, -(-self.retry_after_ms // 1000)))
        return JSONResponse(
            {**self.to_problem(instance), **(members or {})},
            status_code=self.status,
            headers=headers,
            media_type=PROBLEM_JSON,
        )


class InvalidParams(ApiError):
    status, code, title = 400, "INVALID_PARAMS", "Invalid parameters"


class ContextLengthExceeded(InvalidParams):
    """The prompt plus `max_tokens` does not fit the model's context: INVALID_PARAMS on /v2,
    OpenAI's `context_length_exceeded` on /v1."""

    openai_code = "context_length_exceeded"


class Unauthorized(ApiError):
    status, code, title = 401, "UNAUTHORIZED", "Missing or invalid credentials"

    def __init__(self, detail: str = "a valid bearer token is required") -> None:
        super().__init__(detail, headers={"WWW-Authenticate": 'Bearer realm="llorch"'})


class Forbidden(ApiError):
    status, code, title = 403, "FORBIDDEN", "Not allowed"


class NotFound(ApiError):
    status, code, title = 404, "NOT_FOUND", "Not found"


class ModelNotFound(NotFound):
    code, title = "MODEL_NOT_FOUND", "Model not found"


class Conflict(ApiError):
    status, code, title = 409, "CONFLICT", "Conflict"


class PayloadTooLarge(ApiError):
    status, code, title = 413, "PAYLOAD_TOO_LARGE", "Request body too large"


class AdmissionReject(ApiError):
    status, code, title, retriable = 429, "ADMISSION_REJECT", "Rejected by admission policy", True


class RateLimited(ApiError):
    """A tenant's limit refused the task (ORCH-321): the body names the `limit`, the `tenant`
    and `retry_after_s` (the Retry-After header's value); OpenAI's `rate_limit_exceeded`."""

    status, code, title, retriable = 429, "RATE_LIMITED", "Tenant limit reached", True
    openai_code = "rate_limit_exceeded"

    def __init__(
        self,
        detail: str,
        *,
        limit: str | None = None,
        tenant: str | None = None,
        retry_after_ms: int | None = None,
    ) -> None:
        super().__init__(detail, retry_after_ms=retry_after_ms)
        self.limit, self.tenant = limit, tenant

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        body = super().to_problem(instance)
        body["limit"], body["tenant"] = self.limit, self.tenant
        if self.retry_after_ms is not None:
            body["retry_after_s"] = max(1, -(-self.retry_after_ms // 1000))
        return body


class BudgetExhausted(RateLimited):
    """A tenant's daily or monthly token budget is spent (ORCH-321): 429 as a rate limit, with
    its own code; OpenAI's `insufficient_quota`."""

    code, title = "BUDGET_EXHAUSTED", "Tenant token budget spent"
    openai_code = "insufficient_quota"


class QueueFull(ApiError):
    status, code, title, retriable = 429, "QUEUE_FULL", "Queue full", True


class ModelUnavailable(ApiError):
    status, code, title, retriable = 503, "MODEL_UNAVAILABLE", "Model unavailable", True


class Busy(ApiError):
    status, code, title, retriable = 503, "BUSY", "All slots busy", True


class Draining(ApiError):
    status, code, title, retriable = 503, "DRAINING", "Shutting down", True


class DeadlineUnmet(ApiError):
    status, code, title = 504, "DEADLINE_UNMET", "Deadline unmet"


class WorkerReset(ApiError):
    status, code, title, retriable = 502, "WORKER_RESET", "Worker failed", True


class Internal(ApiError):
    pass


_STATUS_ERRORS: dict[int, type[ApiError]] = {
    400: InvalidParams,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: PayloadTooLarge,
}


class MethodNotAllowed(ApiError):
    status, code, title = 405, "METHOD_NOT_ALLOWED", "Method not allowed"


class ClientClosedRequest(ApiError):
    """The client went away mid-request; the status is nginx's 499, since nobody reads it."""

    status, code, title = 499, "CLIENT_CLOSED_REQUEST", "Client closed request"


# How an error becomes a reply: the error and the request's path (the problem's `instance`).
Render = Callable[[ApiError, str | None], Response]


def problem_response(err: ApiError, path: str | None) -> Response:
    """The plain rendering: problem+json and nothing else."""
    return err.response(path)


def install_problem_handlers(app: Starlette, render: Render = problem_response) -> None:
    """Render ApiError, Starlette's HTTPException and anything unexpected through `render`."""

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return render(exc, request.url.path)

    async def on_http_exception(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        cls = MethodNotAllowed if exc.status_code == 405 else _STATUS_ERRORS.get(exc.status_code)
        if cls is None:
            cls = Internal
        # Routing raises these with the bare status phrase ("Not Found"): say what was asked.
        where = f"{request.method} {request.url.path}"
        detail = {404: f"nothing is served at {where}", 405: f"{where} is not allowed"}.get(
            exc.status_code, exc.detail or cls.title
        )
        err = cls(detail)
        err.status = exc.status_code  # type: ignore[misc]
        return render(err, request.url.path)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return render(Internal("internal error; see the server log"), request.url.path)

    async def on_client_gone(request: Request, exc: Exception) -> Response:
        # The client closed the connection before its body arrived: nobody reads an answer and
        # nothing went wrong on our side, so this is no "unhandled error" (and no traceback).
        log.debug("client left during the body of %s %s", request.method, request.url.path)
        return render(ClientClosedRequest("the client closed the connection"), request.url.path)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(ClientDisconnect, on_client_gone)
    app.add_exception_handler(HTTPException, on_http_exception)
    app.add_exception_handler(Exception, on_unexpected)
