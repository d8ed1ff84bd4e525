"""`POST /v1/responses` with the real `openai` package against orchestratord and a real worker
on the tiny model (ORCH-260..ORCH-266). Replies are read back by the client's own types, and
the raw JSON and SSE events are validated against them (pydantic, required fields included).
The tiny model's text is noise, so calls are only made when forced and JSON only when a
format constrains it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tests.orchestratord.cluster import wait_for
from tests.orchestratord.sdk_cluster import API_KEY, MODEL, Cluster, run_cluster

pytestmark = pytest.mark.e2e

PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "pattern": "^[A-Za-z]{1,10}$"},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The forecast",
    "parameters": PARAMETERS,
    "strict": True,
}
FORCE: Any = {"type": "function", "name": "get_weather"}
FORMAT: Any = {"type": "json_schema", "name": "forecast", "schema": PARAMETERS, "strict": True}
EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with run_cluster(tiny_model, tmp_path_factory.mktemp("responses")) as c:
        yield c


@pytest.fixture
def client(cluster: Cluster) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=cluster.url + "/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def raw_events(cluster: Cluster, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The SSE events of a streamed response, each checked: its `event:` name is its `type`,
    and it validates as the openai package's ResponseStreamEvent."""
    out: list[dict[str, Any]] = []
    headers = {"Authorization": f"Bearer {API_KEY}"}
    with httpx.stream(
        "POST", cluster.url + "/v1/responses", json={**body, "stream": True}, headers=headers
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
                assert data["type"] == name
                EVENTS.validate_python(data)
                out.append(data)
    return out


def test_orch_263_orch_266_a_text_response_reads_back_as_the_clients_response(
    cluster: Cluster, client: openai.OpenAI
) -> None:
    """ORCH-260, ORCH-263, ORCH-266: `input` text with `instructions` gives a Response with one
    message of output_text, its usage, and `incomplete` at max_output_tokens; the raw JSON
    validates as the openai package's Response."""
    reply = client.responses.create(
        model=MODEL,
        instructions="Be brief.",
        input="Hello there",
        max_output_tokens=6,
        metadata={"run": "r1"},
    )
    assert reply.object == "response" and reply.id.startswith("resp_")
    assert reply.status == "incomplete" and reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    (item,) = reply.output
    assert item.type == "message" and item.role == "assistant" and item.status == "incomplete"
    assert reply.output_text and item.content[0].type == "output_text"
    assert reply.usage is not None and reply.usage.output_tokens == 6
    assert reply.usage.input_tokens > 0
    assert reply.usage.total_tokens == reply.usage.input_tokens + 6
    assert reply.usage.input_tokens_details.cached_tokens >= 0
    assert reply.model == MODEL and reply.instructions == "Be brief."
    assert reply.metadata == {"run": "r1"}
    raw = httpx.post(
        cluster.url + "/v1/responses",
        json={"model": MODEL, "input": "Hi", "max_output_tokens": 3},
        headers={"Authorization": f"Bearer {API_KEY}"},
    )
    assert raw.status_code == 200
    Response.model_validate(raw.json())
    assert raw.json()["id"] == "resp_" + raw.headers["X-Llorch-Task-Id"]
    assert raw.json()["store"] is False


def test_orch_264_orch_266_a_streamed_text_response_in_the_clients_event_order(
    cluster: Cluster, client: openai.OpenAI
) -> None:
    """ORCH-264, ORCH-266: `stream=True` gives the typed events in OpenAI's order with
    consecutive sequence numbers; the deltas add up to the final output_text."""
    stream = client.responses.create(
        model=MODEL, input=[{"role": "user", "content": "Hello"}], max_output_tokens=8, stream=True
    )
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds[:5] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
    ]
    assert kinds[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.incomplete",
    ]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1]
    assert final.type == "response.incomplete"
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas and final.response.output_text == deltas
    assert final.response.usage is not None and final.response.usage.output_tokens == 8
    raw = raw_events(cluster, {"model": MODEL, "input": "Hi", "max_output_tokens": 4})
    assert raw[0]["type"] == "response.created" and raw[-1]["type"] == "response.incomplete"
    Response.model_validate(raw[-1]["response"])


def test_orch_265_orch_266_a_json_schema_format_validates_streamed_and_not(
    client: openai.OpenAI,
) -> None:
    """ORCH-260, ORCH-265, ORCH-266: `text.format` json_schema constrains the output: the text
    validates against the schema, whole and assembled by `client.responses.stream`."""
    for seed in (1, 2):
        reply = client.responses.create(
            model=MODEL,
            input="The weather as JSON",
            text={"format": FORMAT},
            max_output_tokens=120,
            temperature=0.7,
            extra_body={"seed": seed},
        )
        assert reply.status == "completed", reply.incomplete_details
        jsonschema.validate(json.loads(reply.output_text), PARAMETERS)
    with client.responses.stream(
        model=MODEL, input="The weather as JSON", text={"format": FORMAT}, max_output_tokens=120
    ) as stream:
        deltas = "".join(e.delta for e in stream if e.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == deltas
    jsonschema.validate(json.loads(deltas), PARAMETERS)


def test_orch_265_orch_266_a_forced_function_call_streamed_and_not(
    cluster: Cluster, client: openai.OpenAI
) -> None:
    """ORCH-265, ORCH-266: a named `tool_choice` gives one function_call item whose arguments
    validate against the tool's parameters; streamed, its arguments come as
    function_call_arguments deltas and the client assembles the same call."""
    reply = client.responses.create(
        model=MODEL, input="Weather in Paris?", tools=[WEATHER], tool_choice=FORCE
    )
    assert reply.status == "completed"
    (call,) = reply.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id.startswith("call_") and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), PARAMETERS)
    with client.responses.stream(
        model=MODEL, input="Weather in Paris?", tools=[WEATHER], tool_choice=FORCE
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [e.type for e in events]
    assert kinds[2] == "response.output_item.added"
    assert kinds[-3:] == [
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    (streamed,) = final.output
    assert streamed.type == "function_call" and streamed.arguments == deltas
    jsonschema.validate(json.loads(deltas), PARAMETERS)
    raw = raw_events(
        cluster, {"model": MODEL, "input": "Hi", "tools": [WEATHER], "tool_choice": FORCE}
    )
    assert raw[-1]["type"] == "response.completed"


def test_orch_260_orch_266_a_two_turn_loop_with_function_call_output(
    client: openai.OpenAI,
) -> None:
    """ORCH-260, ORCH-266: the first reply's output items go back as input with a
    function_call_output; the second turn answers in text."""
    ask: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.responses.create(model=MODEL, input=ask, tools=[WEATHER], tool_choice=FORCE)
    (call,) = first.output
    assert call.type == "function_call"
    turn: list[Any] = [
        *ask,
        *first.output,
        {"type": "function_call_output", "call_id": call.call_id, "output": '{"temp": 21}'},
    ]
    second = client.responses.create(
        model=MODEL, input=turn, tools=[WEATHER], tool_choice="none", max_output_tokens=8
    )
    assert second.status == "incomplete"
    assert [item.type for item in second.output] == ["message"] and second.output_text
    alone = client.responses.create(
        model=MODEL, input=ask, tools=[WEATHER], tool_choice="none", max_output_tokens=1
    )
    # The call and its output reached the prompt.
    assert second.usage is not None and alone.usage is not None
    assert second.usage.input_tokens > alone.usage.input_tokens


def _status(cluster: Cluster, task_id: str) -> str:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    return str(httpx.get(f"{cluster.url}/v2/tasks/{task_id}", headers=auth).json()["status"])


def test_orch_264_closing_a_stream_cancels_its_task(
    cluster: Cluster, client: openai.OpenAI
) -> None:
    """ORCH-264, ORCH-015: a Responses stream whose client leaves cancels its task."""
    stream = client.responses.create(
        model=MODEL,
        input="Tell me everything",
        max_output_tokens=16000,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    task_id = stream.response.headers["x-llorch-task-id"]
    for event in stream:
        if event.type == "response.output_text.delta":
            break
    assert _status(cluster, task_id) == "running"
    stream.close()
    wait_for(lambda: _status(cluster, task_id) == "cancelled", what="the task to be cancelled")


def test_orch_263_orch_264_a_task_cancelled_elsewhere_ends_the_stream_cancelled(
    cluster: Cluster, client: openai.OpenAI
) -> None:
    """ORCH-263, ORCH-264: a task cancelled through /v2 ends its Responses stream with
    `response.incomplete`, status `cancelled`, its message closed `incomplete`."""
    stream = client.responses.create(
        model=MODEL,
        input="Tell me everything",
        max_output_tokens=16000,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    task_id = stream.response.headers["x-llorch-task-id"]
    kinds: list[str] = []
    for event in stream:
        kinds.append(event.type)
        if kinds.count("response.output_text.delta") == 1:
            httpx.post(
                f"{cluster.url}/v2/tasks/{task_id}/cancel",
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
    last = event
    assert last.type == "response.incomplete" and last.response.status == "cancelled"
    assert kinds[-2] == "response.output_item.done"
    (item,) = last.response.output
    assert item.type == "message" and item.status == "incomplete"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"background": True}, "background"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "x"}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": FORCE, "text": {"format": FORMAT}}, "tool_choice"),
        ({"text": {"format": {"type": "xml"}}}, "text.format"),
        ({"max_output_tokens": 0}, "max_output_tokens"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0]"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
            "input[0].content[0]",
        ),
    ],
)
def test_orch_261_orch_262_refusals_name_the_responses_param(
    client: openai.OpenAI, extra: dict[str, Any], param: str
) -> None:
    """ORCH-261, ORCH-262: what needs stored state, and what llorch does not offer, is a 400
    in OpenAI's error shape naming the Responses param, streamed or not."""
    body: dict[str, Any] = {"model": MODEL, "input": "Hi", "max_output_tokens": 4, **extra}
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as bad:
            client.responses.create(**body, stream=stream)
        assert bad.value.status_code == 400 and bad.value.param == param, bad.value.message
