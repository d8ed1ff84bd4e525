"""Tool calling with the real `openai` package against orchestratord's /v1 and a real worker
on the tiny model (ORCH-250..ORCH-256). The tiny model's text is noise, so a call is only
ever made when forced; the forced call's grammar comes from the worker (WRK-131)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

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
    "function": {"name": "get_weather", "description": "The forecast", "parameters": PARAMETERS},
}
TIME: Any = {
    "type": "function",
    "function": {
        "name": "get_time",
        "parameters": {"type": "object", "properties": {}, "additionalProperties": False},
    },
}
ASK: Any = [{"role": "user", "content": "What is the weather in Paris?"}]
FORCE: Any = {"type": "function", "function": {"name": "get_weather"}}


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with run_cluster(tiny_model, tmp_path_factory.mktemp("tools")) as c:
        yield c


@pytest.fixture
def client(cluster: Cluster) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=cluster.url + "/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def test_orch_252_orch_254_a_forced_call_validates_against_the_schema(
    client: openai.OpenAI,
) -> None:
    """ORCH-252, ORCH-254, ORCH-256: a named tool_choice gives one call of that function whose
    arguments validate against its parameters, with finish_reason tool_calls."""
    for seed in (1, 2, 3):
        reply = client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=[WEATHER, TIME],
            tool_choice=FORCE,
            max_tokens=120,
            seed=seed,
        )
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls", choice.message
        (call,) = choice.message.tool_calls or []
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS)
        assert choice.message.content is None


def test_orch_255_a_forced_call_streams_as_deltas_the_client_assembles(
    client: openai.OpenAI,
) -> None:
    """ORCH-255, ORCH-256: streamed, the call arrives as tool_calls deltas (index, id, type,
    name, then argument fragments) that the openai package's stream helper assembles into
    arguments valid against the schema; required picks one of the tools."""
    with client.chat.completions.stream(
        model=MODEL,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice="required",
        max_tokens=120,
        seed=7,
    ) as stream:
        chunks = [e.chunk for e in stream if e.type == "chunk"]
        final = stream.get_final_completion()
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas and deltas[0].index == 0 and deltas[0].id and deltas[0].type == "function"
    assert deltas[0].function is not None and deltas[0].function.name in ("get_weather", "get_time")
    assert all(d.index == 0 for d in deltas) and all(d.id is None for d in deltas[1:])
    assert not any(c.choices[0].delta.content for c in chunks if c.choices)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    (call,) = final.choices[0].message.tool_calls or []
    schema = PARAMETERS if call.function.name == "get_weather" else TIME["function"]["parameters"]
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_orch_251_a_two_turn_tool_loop_completes(client: openai.OpenAI) -> None:
    """ORCH-251, ORCH-256: call -> role tool result -> answer: the second turn, with the
    assistant's tool_calls and the tool's result in its history, is answered (streamed too)."""
    first = client.chat.completions.create(
        model=MODEL, messages=ASK, tools=[WEATHER], tool_choice="required", max_tokens=120, seed=3
    )
    call_message = first.choices[0].message
    (call,) = call_message.tool_calls or []
    history: Any = [
        *ASK,
        call_message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"forecast": "sunny, 21 C"}'},
    ]
    second = client.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER], max_tokens=8, temperature=0
    )
    assert second.choices[0].finish_reason in ("stop", "length")
    assert isinstance(second.choices[0].message.content, str)
    # The history (tools, call, result) is in the prompt: it is longer than the question alone.
    plain = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=1)
    assert second.usage is not None and plain.usage is not None
    assert second.usage.prompt_tokens > plain.usage.prompt_tokens + 100
    stream = client.chat.completions.create(
        model=MODEL, messages=history, tools=[WEATHER], max_tokens=8, temperature=0, stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == second.choices[0].message.content


def test_orch_250_tools_reach_the_prompt_unless_none(client: openai.OpenAI) -> None:
    """ORCH-250, PC-103: auto sends the tools (the prompt grows by their listing) and reads the
    noise back as content; none sends nothing more than the plain request."""

    def prompt_tokens(**extra: Any) -> int:
        reply = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, **extra)
        assert reply.choices[0].message.tool_calls is None
        assert reply.usage is not None
        return int(reply.usage.prompt_tokens)

    plain = prompt_tokens()
    assert prompt_tokens(tools=[WEATHER]) > plain + 100
    assert prompt_tokens(tools=[WEATHER], tool_choice="none") == plain


def test_orch_250_a_bad_tool_choice_is_a_bad_request(client: openai.OpenAI) -> None:
    """ORCH-250: a tool_choice naming no offered function is a 400 naming the field."""
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=[TIME],
            tool_choice=FORCE,
        )
    assert err.value.param == "tool_choice"


def test_orch_252_a_forced_call_with_a_response_format_is_a_bad_request(
    client: openai.OpenAI,
) -> None:
    """ORCH-252, ORCH-242: a forced call and a response_format would both constrain the output:
    refused naming tool_choice."""
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            tools=[TIME],
            tool_choice="required",
            response_format={"type": "json_object"},
        )
    assert err.value.param == "tool_choice"


def test_orch_257_legacy_functions_stream_a_function_call(cluster: Cluster) -> None:
    """ORCH-257: legacy `functions` with a forced `function_call`, streamed: the chunks carry
    `delta.function_call` (the name, then argument fragments that join into valid arguments)
    and finish with function_call."""
    body = {
        "model": MODEL,
        "messages": ASK,
        "functions": [WEATHER["function"]],
        "function_call": {"name": "get_weather"},
        "max_tokens": 120,
        "seed": 5,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {API_KEY}"}
    name, arguments, finishes = "", "", []
    with httpx.stream(
        "POST", cluster.url + "/v1/chat/completions", json=body, headers=headers
    ) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            choice = json.loads(line[6:])["choices"][0]
            assert "tool_calls" not in choice["delta"]
            call = choice["delta"].get("function_call")
            if call is not None:
                name += call.get("name", "")
                arguments += call["arguments"]
            finishes.append(choice["finish_reason"])
    assert name == "get_weather" and finishes[-1] == "function_call"
    jsonschema.validate(json.loads(arguments), PARAMETERS)
