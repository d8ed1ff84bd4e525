"""`n > 1` end to end: the real `openai` client and /v2 through orchestratord to a real worker
on the tiny model (ORCH-270, WRK-140)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import openai
import pytest

from llorch_sdk import Client
from tests.orchestratord.sdk_cluster import API_KEY, MODEL, Cluster, run_cluster
from tests.orchestratord.test_openai_tools_e2e import ASK, FORCE, PARAMETERS, WEATHER

pytestmark = pytest.mark.e2e
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "user", "content": "Say something."},
]


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    with run_cluster(tiny_model, tmp_path_factory.mktemp("choices"), slots=3) as c:
        yield c


@pytest.fixture
def client(cluster: Cluster) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=cluster.url + "/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def test_orch270_n3_with_a_seed_at_temperature_0_gives_three_identical_choices(
    client: openai.OpenAI,
) -> None:
    """ORCH-270, WRK-140: three choices, each with its finish_reason; completion_tokens is their
    sum; n=1 is unchanged and gives the same text."""

    def create(n: int) -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=8,
            temperature=0,
            seed=4,
            n=n,
            extra_body={"ignore_eos": True},
        )

    whole = create(3)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    texts = [c.message.content for c in whole.choices]
    assert texts[0] and texts == [texts[0]] * 3
    assert [c.finish_reason for c in whole.choices] == ["length"] * 3
    assert whole.usage is not None and whole.usage.completion_tokens == 24
    one = create(1)
    assert len(one.choices) == 1 and one.choices[0].message.content == texts[0]
    assert one.usage is not None and one.usage.completion_tokens == 8


def test_orch270_n3_streamed_assembles_three_choices(client: openai.OpenAI) -> None:
    """ORCH-270: stream chunks carry their choice's index; each choice gets its role, its text
    and its finish_reason; the usage chunk counts all of them."""
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=8,
        temperature=0,
        seed=4,
        n=3,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    texts = ["", "", ""]
    roles: list[str | None] = [None] * 3
    finishes: list[str | None] = [None] * 3
    chunks = list(stream)
    for c in chunks:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
            roles[ch.index] = roles[ch.index] or ch.delta.role
            finishes[ch.index] = finishes[ch.index] or ch.finish_reason
    assert texts[0] and texts == [texts[0]] * 3
    assert roles == ["assistant"] * 3 and finishes == ["length"] * 3
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 24
    legacy = client.completions.create(
        model=MODEL, prompt="once", max_tokens=5, temperature=0, seed=1, n=2
    )
    assert [c.index for c in legacy.choices] == [0, 1]
    assert legacy.choices[0].text == legacy.choices[1].text


def test_orch270_v2_events_carry_the_index_and_n_takes_n_slots(cluster: Cluster) -> None:
    """ORCH-270: a /v2 task with n=3 streams token events with `index` and ends with each
    choice's outcome; n above 8, or above every worker's slots, is a 400."""
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": MODEL, "prompt": "hello", "max_tokens": 4, "temperature": 0, "n": 3}
    r = httpx.post(cluster.url + "/v2/tasks", json=body, headers=headers, timeout=30)
    assert r.status_code in (200, 201, 202), r.text
    task_id = r.json()["task_id"]
    events = httpx.get(cluster.url + f"/v2/tasks/{task_id}/events", headers=headers, timeout=60)
    text = events.text
    assert '"index":2' in text and '"choices"' in text
    bad = httpx.post(cluster.url + "/v2/tasks", json={**body, "n": 9}, headers=headers)
    assert bad.status_code == 400 and bad.json()["errors"][0]["field"] == "n"
    never = httpx.post(cluster.url + "/v2/tasks", json={**body, "n": 4}, headers=headers)
    assert never.status_code == 400 and never.json()["errors"][0]["field"] == "n", "3 slots"


def test_orch270_the_sdk_takes_n_and_reads_each_choice(cluster: Cluster) -> None:
    """ORCH-270: the SDK's `n` gives `n` texts, identical with a seed at temperature 0; a task
    without `n` gives one."""
    with Client(cluster.url, api_key=API_KEY) as c:
        texts = c.stream(MODEL, "the cat", n=3, max_tokens=6, temperature=0, seed=2).texts()
        single = c.stream(MODEL, "the cat", max_tokens=6, temperature=0, seed=2).texts()
    assert texts[0] and texts == [texts[0]] * 3
    assert single == texts[:1]


def test_orch271_n3_with_logprobs_gives_each_choice_its_own(client: openai.OpenAI) -> None:
    """ORCH-271, WRK-134: with n=3 each choice carries the logprobs of its own tokens, whole and
    streamed: one entry per token whose text is the choice's, each value <= 0 and the chosen
    token among its top_logprobs."""
    args: dict[str, Any] = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 6,
        "temperature": 1.0,
        "seed": 11,
        "n": 3,
        "logprobs": True,
        "top_logprobs": 3,
        "extra_body": {"ignore_eos": True},
    }
    whole = client.chat.completions.create(**args)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    for c in whole.choices:
        entries = c.logprobs.content if c.logprobs else None
        assert entries is not None and len(entries) == 6
        assert "".join(e.token for e in entries) == c.message.content
        for e in entries:
            assert e.logprob <= 0 and len(e.top_logprobs) == 3
            assert e.token in [t.token for t in e.top_logprobs]
    stream = client.chat.completions.create(**args, stream=True)
    texts, tokens = ["", "", ""], [0, 0, 0]
    for chunk in stream:
        for ch in chunk.choices:
            texts[ch.index] += ch.delta.content or ""
            content = ch.logprobs.content if ch.logprobs else None
            for e in content or []:
                tokens[ch.index] += 1
                assert e.logprob <= 0 and e.token in [t.token for t in e.top_logprobs]
    assert tokens == [6, 6, 6]
    assert texts == [c.message.content for c in whole.choices], "seeded: the same draws"


def test_orch271_n2_with_a_forced_tool_call_gives_a_call_per_choice(
    client: openai.OpenAI,
) -> None:
    """ORCH-271, ORCH-252, ORCH-255: with n=2 and a forced call each choice is a call whose
    arguments validate, whole and streamed; the streamed deltas name their choice and the
    openai package assembles each choice's call."""
    args: dict[str, Any] = {
        "model": MODEL,
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": FORCE,
        "max_tokens": 120,
        "seed": 5,
        "n": 2,
    }
    whole = client.chat.completions.create(**args)
    assert [c.index for c in whole.choices] == [0, 1]
    for c in whole.choices:
        assert c.finish_reason == "tool_calls", c.message
        (call,) = c.message.tool_calls or []
        assert call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), PARAMETERS)
    chunks = list(client.chat.completions.create(**args, stream=True))
    calls: dict[int, dict[str, str]] = {}
    finishes: dict[int, str] = {}
    for chunk in chunks:
        for ch in chunk.choices:
            assert not ch.delta.content
            if ch.finish_reason:
                finishes[ch.index] = ch.finish_reason
            for d in ch.delta.tool_calls or []:
                assert d.index == 0, "one call in each choice"
                call = calls.setdefault(ch.index, {"name": "", "arguments": ""})
                if d.function is not None:
                    call["name"] += d.function.name or ""
                    call["arguments"] += d.function.arguments or ""
    assert finishes == {0: "tool_calls", 1: "tool_calls"}
    assert sorted(calls) == [0, 1]
    for call in calls.values():
        assert call["name"] == "get_weather"
        jsonschema.validate(json.loads(call["arguments"]), PARAMETERS)
