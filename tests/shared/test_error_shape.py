"""Pins the one error shape every llorch HTTP API returns (RFC 9457 problem+json)."""

from __future__ import annotations

import logging

import anyio
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient
from starlette.types import Message, Scope

from shared.auth import BearerAuth
from shared.params import FieldReader, read_json
from shared.problem import QueueFull, install_problem_handlers


async def full(request: Request) -> Response:
    raise QueueFull("queue is full (1024 tasks)", retry_after_ms=2500)


async def boom(request: Request) -> Response:
    raise RuntimeError("secret internal detail")


async def validate(request: Request) -> Response:
    r = FieldReader(await request.json(), known={"max_tokens", "temperature", "prompt"})
    r.generation()
    r.raise_if_failed()
    return JSONResponse({"ok": True})


def make_app(token: str | None = None) -> Starlette:
    middleware = [Middleware(BearerAuth, tokens=[token], open_paths={"/open"})] if token else []
    app = Starlette(
        routes=[
            Route("/full", full),
            Route("/boom", boom),
            Route("/open", full),
            Route("/validate", validate, methods=["POST"]),
        ],
        middleware=middleware,
    )
    install_problem_handlers(app)
    return app


def test_api_error_shape_with_retry_after() -> None:
    with TestClient(make_app()) as c:
        r = c.get("/full")
    assert r.status_code == 429
    assert r.headers["content-type"] == "application/problem+json"
    assert r.headers["retry-after"] == "3"  # rounded up to whole seconds
    assert r.json() == {
        "type": "https://llorch.dev/problems/queue-full",
        "title": "Queue full",
        "status": 429,
        "detail": "queue is full (1024 tasks)",
        "code": "QUEUE_FULL",
        "retriable": True,
        "instance": "/full",
        "retry_after_ms": 2500,
    }


def test_unexpected_errors_hide_their_detail() -> None:
    with TestClient(make_app(), raise_server_exceptions=False) as c:
        r = c.get("/boom")
    assert r.status_code == 500
    assert r.json()["code"] == "INTERNAL"
    assert "secret" not in r.text


def test_starlette_404_and_405_are_problems_too() -> None:
    with TestClient(make_app()) as c:
        missing, wrong = c.get("/nope"), c.get("/validate")
    assert (missing.status_code, missing.json()["code"]) == (404, "NOT_FOUND")
    assert (wrong.status_code, wrong.json()["code"]) == (405, "METHOD_NOT_ALLOWED")
    assert missing.headers["content-type"] == "application/problem+json"


def test_field_errors_list_every_bad_field() -> None:
    with TestClient(make_app()) as c:
        r = c.post("/validate", json={"max_tokens": True, "temperature": "hot", "x": 1})
    assert r.status_code == 400
    fields = [e["field"] for e in r.json()["errors"]]
    assert fields == ["x", "prompt", "max_tokens", "temperature"]


def test_bearer_auth() -> None:
    with TestClient(make_app(token="s3cret")) as c:
        assert c.get("/full").status_code == 401
        assert c.get("/full", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/full", headers={"Authorization": "Basic s3cret"}).status_code == 401
        assert c.get("/full", headers={"Authorization": "Bearer s3cret"}).status_code == 429
        assert c.get("/open").status_code == 429


def test_a_client_that_leaves_mid_body_is_no_unhandled_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ORCH-083: a client that closes its connection before the body arrived (starlette raises
    ClientDisconnect from request.body()) is not logged as an unhandled error with a traceback;
    before, every such client left an "unhandled error on POST" and a 500 in the log."""

    async def read_body(request: Request) -> Response:
        return JSONResponse(await read_json(request))

    app = Starlette(routes=[Route("/body", read_body, methods=["POST"])])
    install_problem_handlers(app)
    sent: list[Message] = []
    incoming: list[Message] = [
        {"type": "http.request", "body": b'{"prompt":', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "path": "/body",
        "raw_path": b"/body",
        "query_string": b"",
        "headers": [(b"content-length", b"100"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
    }
    with caplog.at_level(logging.DEBUG, logger="llorch.http"):
        anyio.run(app, scope, receive, send)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 499
