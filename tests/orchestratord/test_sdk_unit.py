"""The SDK's pure parts: error mapping from problem+json, event parsing, resume bookkeeping."""

from __future__ import annotations

import httpx
import pytest
from httpx_sse import ServerSentEvent

from llorch_sdk import (
    ConnectionFailed,
    Event,
    LlorchError,
    ModelUnavailable,
    QueueFull,
    Submitted,
    WorkerReset,
)
from llorch_sdk.errors import error_from_response
from llorch_sdk.models import Cursor, parse_event, task_body
from shared.problem import QueueFull as ServerQueueFull


def test_problem_json_becomes_the_matching_exception() -> None:
    problem = ServerQueueFull("queue is full", retry_after_ms=2500).response("/v2/tasks")
    response = httpx.Response(
        problem.status_code, headers=dict(problem.headers), content=bytes(problem.body)
    )
    err = error_from_response(response)
    assert isinstance(err, QueueFull)
    assert (err.status, err.code, err.retriable, err.retry_after_ms) == (
        429,
        "QUEUE_FULL",
        True,
        2500,
    )
    assert err.detail == "queue is full"


def test_a_non_json_error_still_has_status_and_code() -> None:
    response = httpx.Response(503, headers={"Retry-After": "3"}, text="<html>bad gateway</html>")
    err = error_from_response(response)
    assert isinstance(err, ModelUnavailable)
    assert (err.status, err.code, err.retriable, err.retry_after_ms) == (
        503,
        "MODEL_UNAVAILABLE",
        True,
        3000,
    )


def test_unknown_codes_give_the_base_class() -> None:
    response = httpx.Response(
        500, json={"code": "SOMETHING_NEW", "detail": "x", "retriable": False}
    )
    err = error_from_response(response)
    assert type(err) is LlorchError and err.code == "SOMETHING_NEW"


def test_error_event_raises_the_matching_exception() -> None:
    ev = Event(7, "error", {"code": "WORKER_RESET", "message": "worker died", "retriable": True})
    assert ev.terminal
    with pytest.raises(WorkerReset) as exc:
        ev.raise_for_error()
    assert exc.value.retriable
    Event(1, "token", {"t": "x"}).raise_for_error()  # not an error: no exception


def test_parse_event_skips_keepalives_and_keeps_ids() -> None:
    assert parse_event(ServerSentEvent(event="message", data="")) is None
    ev = parse_event(ServerSentEvent(event="token", data='{"t":"a","i":0}', id="3"))
    assert ev == Event(3, "token", {"t": "a", "i": 0})


def test_cursor_drops_replayed_events_and_resumes_after_the_last() -> None:
    cursor = Cursor(None, max_reconnects=2)
    assert cursor.headers() == {}
    assert cursor.accept(Event(0, "queued"))
    assert cursor.accept(Event(1, "token"))
    assert cursor.headers() == {"Last-Event-ID": "1"}
    assert not cursor.accept(Event(1, "token"))
    assert cursor.accept(Event(2, "end"))
    assert cursor.done


def test_cursor_gives_up_after_reconnects_without_progress() -> None:
    cursor = Cursor(4, max_reconnects=2)
    assert cursor.headers() == {"Last-Event-ID": "4"}
    assert cursor.broken(None) > 0
    assert cursor.broken(None) > 0
    with pytest.raises(ConnectionFailed):
        cursor.broken(httpx.ReadError("boom"))
    fresh = Cursor(None, max_reconnects=1)
    fresh.broken(None)
    fresh.accept(Event(0, "queued"))  # progress resets the count
    fresh.broken(None)


def test_task_body_drops_unset_params() -> None:
    body = task_body("m", "hi", None, {"max_tokens": 4, "seed": None})
    assert body == {"model": "m", "prompt": "hi", "max_tokens": 4}


def test_submitted_from_json() -> None:
    s = Submitted.from_json({"task_id": "t1", "status": "queued", "queue_position": 0})
    assert s == Submitted("t1", "queued", 0, "/v2/tasks/t1/events")
    with pytest.raises(LlorchError):
        Submitted.from_json({})
