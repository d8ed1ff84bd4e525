"""The real `openai` package against orchestratord's /v1 with a real worker on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import jsonschema
import openai
import pytest

from shared.limits import MAX_BODY_BYTES
from tests.orchestratord.cluster import wait_for
from tests.orchestratord.sdk_cluster import (
    API_KEY,
    CLUSTER_TOKEN,
    MODEL,
    TENANT,
    Cluster,
    run_cluster,
)

pytestmark = pytest.mark.e2e
QUEUE_CAPACITY = 2
MESSAGES: list[openai.types.chat.ChatCompletionMessageParam] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say something."},
]


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("openai")
    with run_cluster(tiny_model, tmp, extra=["--queue-capacity", str(QUEUE_CAPACITY)]) as c:
        yield c


@pytest.fixture
def client(cluster: Cluster) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=cluster.url + "/v1", api_key=API_KEY, max_retries=0) as c:
        yield c


def test_openai_streams_a_chat_completion(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=6,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and all(f is None for f in finishes[:-1])
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 6 and usage.prompt_tokens > 0
    streamed = "".join(deltas)
    assert streamed
    # Greedy decoding: the same request without streaming gives the same text.
    whole = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=6,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.role == "assistant"
    assert whole.choices[0].message.content == streamed
    assert whole.choices[0].finish_reason == "length"
    assert whole.usage is not None
    assert (whole.usage.completion_tokens, whole.usage.prompt_tokens) == (6, usage.prompt_tokens)


def test_openai_non_streaming_completion(client: openai.OpenAI) -> None:
    done = client.completions.create(
        model=MODEL,
        prompt="Once upon a time",
        max_tokens=5,
        seed=3,
        extra_body={"ignore_eos": True},
    )
    assert done.object == "text_completion" and done.model == MODEL
    assert done.choices[0].finish_reason == "length" and done.choices[0].text
    assert done.usage is not None and done.usage.completion_tokens == 5
    chunks = list(
        client.completions.create(
            model=MODEL,
            prompt="Once upon a time",
            max_tokens=5,
            seed=3,
            stream=True,
            extra_body={"ignore_eos": True},
        )
    )
    assert "".join(c.choices[0].text for c in chunks) == done.choices[0].text


def test_openai_lists_the_served_models(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]


def test_openai_errors_carry_status_and_code(cluster: Cluster, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, n=9)
    assert bad.value.status_code == 400 and bad.value.code == "INVALID_PARAMS"
    assert bad.value.param == "n"
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=MODEL, prompt="x", temperature=7)
    assert bad.value.param == "temperature"
    stranger = openai.OpenAI(base_url=cluster.url + "/v1", api_key="wrong", max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError):
        stranger.models.list()


def test_orch_163_a_prompt_beyond_the_context_is_a_bad_request_streamed_or_not(
    cluster: Cluster, client: openai.OpenAI
) -> None:
    """ORCH-163: over the context is OpenAI's 400 `context_length_exceeded` at once, also with
    stream=True (it used to be a 200 stream that ended in an error chunk). (That a prompt that
    fits exactly still runs is in test_e2e.py.)"""
    long: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "the quick brown fox " * 4085}
    ]
    counted = httpx.post(
        cluster.worker.url + "/tokenize",
        json={"messages": long},
        headers={"authorization": f"Bearer {CLUSTER_TOKEN}"},
    ).json()
    n, n_ctx = counted["n_tokens"], counted["n_ctx"]
    assert n_ctx - 1000 < n < n_ctx, "the conversation is near the context, as the test needs"
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as bad:
            client.chat.completions.create(
                model=MODEL, messages=long, max_tokens=n_ctx - n + 1, stream=stream
            )
        assert bad.value.status_code == 400 and bad.value.code == "context_length_exceeded"
        assert bad.value.param == "max_tokens" and f"{n_ctx} tokens" in bad.value.message
    with pytest.raises(openai.BadRequestError) as bad:
        client.completions.create(model=MODEL, prompt="x " * 100, max_tokens=n_ctx)
    assert bad.value.code == "context_length_exceeded"


def test_orch_084_the_openai_client_reads_the_message_of_a_401_and_a_413(
    cluster: Cluster, client: openai.OpenAI
) -> None:
    """ORCH-084: the auth middleware's 401 and the body limit's 413 carry OpenAI's `error`
    member, so the `openai` package's exceptions say what went wrong, not just the status."""
    stranger = openai.OpenAI(base_url=cluster.url + "/v1", api_key="wrong", max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError) as refused:
        stranger.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert refused.value.message.startswith("Error code: 401 - the API key given is not valid")
    assert "--api-key or LLORCH_API_KEY" in refused.value.message  # ORCH-370
    assert refused.value.code == "UNAUTHORIZED" and refused.value.type == "authentication_error"
    with pytest.raises(openai.APIStatusError) as too_large:
        client.completions.create(model=MODEL, prompt="x" * (MAX_BODY_BYTES + 1))
    assert too_large.value.status_code == 413 and too_large.value.code == "PAYLOAD_TOO_LARGE"
    assert too_large.value.message == (
        f"Error code: 413 - the request body is over the limit of {MAX_BODY_BYTES} bytes"
    )


def test_a_full_queue_is_a_rate_limit_error(cluster: Cluster, client: openai.OpenAI) -> None:
    queued = [
        httpx.post(
            cluster.url + "/v2/tasks",
            headers={"Authorization": f"Bearer {API_KEY}"},
            json={"model": "no-such-model", "prompt": "x"},
        )
        for _ in range(QUEUE_CAPACITY)
    ]
    try:
        with pytest.raises(openai.RateLimitError) as full:
            client.completions.create(model=MODEL, prompt="x", max_tokens=1)
        assert full.value.status_code == 429 and full.value.code == "QUEUE_FULL"
        assert full.value.response.headers["retry-after"] == "1"
    finally:
        for r in queued:
            httpx.post(
                f"{cluster.url}/v2/tasks/{r.json()['task_id']}/cancel",
                headers={"Authorization": f"Bearer {API_KEY}"},
            )


def _status(cluster: Cluster, task_id: str) -> str:
    r = httpx.get(
        f"{cluster.url}/v2/tasks/{task_id}", headers={"Authorization": f"Bearer {API_KEY}"}
    )
    return str(r.json()["status"])


def _slots_busy(cluster: Cluster) -> int:
    return int(httpx.get(cluster.worker.url + "/health").json()["slots_busy"])


LONG = {"ignore_eos": True}


def test_closing_a_stream_cancels_its_task(cluster: Cluster, client: openai.OpenAI) -> None:
    """ORCH-015, WRK-053: a /v1 client that goes away cancels through the one cancel path; the
    real worker frees the slot."""
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=16000,
        stream=True,
        extra_body=LONG,
    )
    task_id = stream.response.headers["x-llorch-task-id"]
    for n, _chunk in enumerate(stream):
        if n == 3:
            break
    assert _status(cluster, task_id) == "running"
    stream.close()
    wait_for(lambda: _status(cluster, task_id) == "cancelled", what="the task to be cancelled")
    wait_for(lambda: _slots_busy(cluster) == 0, what="the worker slot to be freed")


def test_a_client_giving_up_on_a_completion_cancels_its_task(cluster: Cluster) -> None:
    body = {"model": MODEL, "prompt": "x", "max_tokens": 16000, "task_id": "oa-gives-up", **LONG}
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            cluster.url + "/v1/completions",
            json=body,
            timeout=1.0,
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    wait_for(
        lambda: _status(cluster, "oa-gives-up") == "cancelled", what="the task to be cancelled"
    )
    wait_for(lambda: _slots_busy(cluster) == 0, what="the worker slot to be freed")


def test_the_task_belongs_to_the_key_tenant_and_user_is_the_session(
    cluster: Cluster, client: openai.OpenAI
) -> None:
    raw = client.completions.with_raw_response.create(
        model=MODEL, prompt="x", max_tokens=2, user="end-user-7"
    )
    task_id = raw.headers["x-llorch-task-id"]
    assert raw.parse().id == f"cmpl-{task_id}"
    record = httpx.get(
        f"{cluster.url}/v2/tasks/{task_id}", headers={"Authorization": f"Bearer {API_KEY}"}
    ).json()
    assert (record["tenant"], record["session_id"]) == (TENANT, "end-user-7")
    assert record["status"] == "succeeded"


# Small and bounded, so even the tiny random model closes it well within max_tokens.
PICK = {
    "type": "object",
    "properties": {"color": {"enum": ["red", "green", "blue"]}, "ok": {"type": "boolean"}},
    "required": ["color", "ok"],
    "additionalProperties": False,
}
PICK_FORMAT: openai.types.shared_params.ResponseFormatJSONSchema = {
    "type": "json_schema",
    "json_schema": {"name": "pick", "schema": PICK, "strict": True},
}


def test_orch_248_a_json_schema_response_format_gives_valid_json(client: openai.OpenAI) -> None:
    """ORCH-242, ORCH-248: the `openai` package's response_format yields JSON that validates
    against the schema, streamed and not, on chat and legacy completions; json_object yields
    a JSON object."""
    for seed in (1, 2):
        done = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=200, seed=seed, response_format=PICK_FORMAT
        )
        assert done.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(done.choices[0].message.content or ""), PICK)
    chunks = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=200,
        seed=3,
        response_format=PICK_FORMAT,
        stream=True,
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    jsonschema.validate(json.loads(streamed), PICK)
    text = client.completions.create(
        model=MODEL,
        prompt="JSON:",
        max_tokens=200,
        seed=4,
        extra_body={"response_format": PICK_FORMAT},
    )
    jsonschema.validate(json.loads(text.choices[0].text), PICK)
    free = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=300,
        temperature=0,
        response_format={"type": "json_object"},
    )
    if free.choices[0].finish_reason == "stop":  # a random model may ramble past max_tokens
        assert isinstance(json.loads(free.choices[0].message.content or ""), dict)
    else:
        assert (free.choices[0].message.content or "").lstrip().startswith("{")


def test_orch_240_a_schema_the_worker_cannot_compile_is_a_bad_request(
    client: openai.OpenAI,
) -> None:
    """ORCH-240: the worker's 400 for a schema keyword it cannot honour fails the task with
    INVALID_PARAMS, which the `openai` package raises as BadRequestError naming the keyword."""
    fmt: openai.types.shared_params.ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {"name": "mail", "schema": {"type": "string", "format": "email"}},
    }
    with pytest.raises(openai.BadRequestError) as bad:
        client.chat.completions.create(model=MODEL, messages=MESSAGES, response_format=fmt)
    assert bad.value.code == "INVALID_PARAMS" and "email" in bad.value.message


def test_orch_248_chat_logprobs_streamed_and_not(client: openai.OpenAI) -> None:
    """ORCH-243, ORCH-248: greedy, so each chosen token heads its own top_logprobs; every
    logprob is <= 0; the stream's per-chunk entries are the whole reply's."""
    ask: dict[str, object] = {"model": MODEL, "messages": MESSAGES, "max_tokens": 8}
    whole = client.chat.completions.create(
        **ask, temperature=0, logprobs=True, top_logprobs=3, extra_body={"ignore_eos": True}
    )  # type: ignore[call-overload]
    content = whole.choices[0].logprobs.content
    assert content is not None and len(content) == 8
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert all(t.logprob <= 0 for t in entry.top_logprobs)
        assert entry.token in [t.token for t in entry.top_logprobs]
        assert entry.token == entry.top_logprobs[0].token
    stream = client.chat.completions.create(
        **ask,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
        stream=True,
        extra_body={"ignore_eos": True},
    )  # type: ignore[call-overload]
    streamed = [
        e
        for c in stream
        if c.choices and c.choices[0].logprobs and c.choices[0].logprobs.content
        for e in c.choices[0].logprobs.content
    ]
    assert [e.token for e in streamed] == [e.token for e in content]
    plain = client.chat.completions.create(**ask, temperature=0)  # type: ignore[call-overload]
    assert plain.choices[0].logprobs is None


def test_orch_248_completion_logprobs_are_the_legacy_object(client: openai.OpenAI) -> None:
    """ORCH-243, ORCH-248: `logprobs: 2` gives tokens whose text is the completion's, their
    logprobs (<= 0), the top alternatives holding each chosen token, offsets after the prompt."""
    prompt = "Once upon a time"
    done = client.completions.create(
        model=MODEL,
        prompt=prompt,
        max_tokens=6,
        temperature=0,
        logprobs=2,
        extra_body={"ignore_eos": True},
    )
    lp = done.choices[0].logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert lp.text_offset is not None and lp.text_offset[0] == len(prompt)
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert logprob <= 0 and len(top) <= 2 and token in top


def test_orch_245_the_openai_client_retrieves_a_model(client: openai.OpenAI) -> None:
    """ORCH-245: client.models.retrieve finds a served model; an unknown one is NotFoundError."""
    model = client.models.retrieve(MODEL)
    assert (model.id, model.object, model.owned_by) == (MODEL, "model", "llorch")
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("no-such/model")
    assert missing.value.code == "MODEL_NOT_FOUND"


def test_orch_246_usage_reports_the_prefix_cache_hit(client: openai.OpenAI) -> None:
    """ORCH-246: the same conversation twice (one session, so one worker): the second reply's
    usage says how many prompt tokens came from the worker's prefix cache."""
    ask: dict[str, object] = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 2,
        "user": "cache-user",
    }
    first = client.chat.completions.create(**ask)  # type: ignore[call-overload]
    second = client.chat.completions.create(**ask)  # type: ignore[call-overload]
    for done in (first, second):
        assert done.usage is not None and done.usage.prompt_tokens_details is not None
    assert second.usage.prompt_tokens_details.cached_tokens
    assert 0 < second.usage.prompt_tokens_details.cached_tokens <= second.usage.prompt_tokens
