"""orchestratord's one rendering of an error reply, whichever layer refuses the request: the
auth middleware (401, 403), the body limit (413), routing (404, 405), a handler (400, 429, 503
...) or an unexpected exception (500).

Every reply is problem+json (ORCH-082). Under `/v1` it also carries OpenAI's `error` member
(`message`, `type`, `param`, `code`, ORCH-084): OpenAI clients read only that, and without it
the `openai` package raises `AuthenticationError: Error code: 401` with no message.
"""

from __future__ import annotations

from starlette.responses import Response

from orchestratord.http.openai_shapes import openai_error
from shared.problem import ApiError

OPENAI_PREFIX = "/v1"


def is_openai(path: str | None) -> bool:
    return path is not None and (path == OPENAI_PREFIX or path.startswith(OPENAI_PREFIX + "/"))


def error_response(err: ApiError, path: str | None) -> Response:
    """The reply for `err` on `path` (its problem `instance`); a `shared.problem.Render`."""
    return err.response(path, {"error": openai_error(err)} if is_openai(path) else None)
