"""Every error reply under /v1 carries OpenAI's `error` member, whichever layer refuses the
request: the auth middleware, the body limit, routing or a handler (ORCH-084). In process, on
the real app; the `openai` package reading them is in test_openai_e2e.py."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from shared.limits import MAX_BODY_BYTES
from tests.orchestratord.conftest import AppFactory

KEY = {"authorization": "Bearer k-acme"}
SETTINGS: dict[str, Any] = {
    "api_keys": ("acme:k-acme",),
    "admin_token": "at",
    "queue_capacity": 1,
    "expect_models": ("m",),
}
BIG = b'{"model": "m", "prompt": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}'


def _chunks(total: int) -> Iterator[bytes]:
    for _ in range(0, total, 65536):
        yield b" " * 65536


def assert_openai_error(r: httpx.Response, status: int, code: str, kind: str) -> dict[str, Any]:
    """The reply is problem+json (ORCH-082) with OpenAI's `error` member (ORCH-084)."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["code"] == code and body["status"] == status
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["type"] == kind
    assert error["message"] == body["detail"] and len(error["message"].split()) >= 3
    return dict(error)


def test_orch_084_v1_errors_of_every_layer_carry_the_openai_error_member(
    orchd: AppFactory,
) -> None:
    """ORCH-084: 401 (no key, a wrong key) from the auth middleware, 413 from the body limit
    (declared and streamed), 404 and 405 from routing and 429 from a handler, all under /v1,
    carry `{"error": {message, type, param, code}}`; /v2 errors stay plain problem+json."""
    with orchd(**SETTINGS) as c:
        models = "/v1/models"
        missing = assert_openai_error(c.get(models), 401, "UNAUTHORIZED", "authentication_error")
        wrong = assert_openai_error(
            c.get(models, headers={"authorization": "Bearer nope"}),
            401,
            "UNAUTHORIZED",
            "authentication_error",
        )
        assert missing["message"] != wrong["message"]
        assert c.get(models).headers["www-authenticate"].startswith("Bearer")

        chat = "/v1/chat/completions"
        assert_openai_error(
            c.post(chat, content=BIG, headers=KEY), 413, "PAYLOAD_TOO_LARGE", "api_error"
        )
        assert_openai_error(
            c.post(chat, content=_chunks(MAX_BODY_BYTES + 65536), headers=KEY),
            413,
            "PAYLOAD_TOO_LARGE",
            "api_error",
        )
        # The body limit answers before routing: an unknown /v1 path is /v1 all the same.
        assert_openai_error(
            c.post("/v1/nothing", content=BIG, headers=KEY), 413, "PAYLOAD_TOO_LARGE", "api_error"
        )
        assert_openai_error(c.get("/v1/nothing", headers=KEY), 404, "NOT_FOUND", "not_found_error")
        assert_openai_error(c.get(chat, headers=KEY), 405, "METHOD_NOT_ALLOWED", "api_error")

        assert c.post("/v2/tasks", json={"model": "m", "prompt": "x"}, headers=KEY).is_success
        full = assert_openai_error(
            c.post("/v1/completions", json={"model": "m", "prompt": "x"}, headers=KEY),
            429,
            "QUEUE_FULL",
            "rate_limit_error",
        )
        assert full["param"] is None

        # /v2 keeps the plain problem+json: no OpenAI member there.
        for r in (c.get("/v2/tasks"), c.post("/v2/tasks", content=BIG, headers=KEY)):
            assert r.status_code in (401, 413) and "error" not in r.json()
