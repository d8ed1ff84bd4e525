"""Constrained decoding and logprobs (WRK-130..WRK-135) on real llama.cpp.

The tiny model has random weights: whatever it outputs under a grammar is valid only because the
grammar sampler made it so."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from shared.wire import TokenLogprob
from tests.support import Proc, spawn_worker
from tests.worker.conftest import TOKEN
from tests.worker.sse_client import Event, events, execute, text_of, wait_idle
from worker.batching import Step
from worker.engine import GenerationJob, LlamaEngine, Sampling
from worker.structured import SchemaError, nesting_problem, schema_to_grammar

pytestmark = pytest.mark.e2e
AUTH = {"Authorization": f"Bearer {TOKEN}"}
GREEDY = Sampling(temperature=0.0, seed=1)

SCHEMAS: dict[str, dict[str, Any]] = {
    "nested": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "id": {"type": "integer"},
                    "name": {"type": "string"},
                    "address": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}, "zip": {"type": "integer"}},
                        "required": ["city"],
                    },
                },
                "required": ["id", "name", "address"],
            }
        },
        "required": ["user"],
    },
    "array": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 4},
    "enum": {
        "type": "object",
        "properties": {"color": {"enum": ["red", "green", "blue"]}, "ok": {"type": "boolean"}},
        "required": ["color", "ok"],
    },
    "pattern": {
        "type": "object",
        "properties": {"code": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}},
        "required": ["code"],
    },
    "bounds": {
        "type": "object",
        "properties": {
            "age": {"type": "integer", "minimum": 18, "maximum": 99},
            "n": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5},
        },
        "required": ["age", "n"],
    },
    "refs": {
        "$defs": {
            "pt": {
                "type": "object",
                "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                "required": ["x", "y"],
            }
        },
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/pt"},
            "b": {"anyOf": [{"type": "null"}, {"type": "boolean"}]},
            "when": {"type": "string", "format": "date"},
        },
        "required": ["a", "b", "when"],
        "additionalProperties": False,
    },
}


# String lengths count characters; the grammar counts code points as llama.cpp decodes the
# token bytes, leniently: a random model's invalid UTF-8 (which reaches the text as U+FFFD) can
# make a string longer than maxLength (WRK-131). Lengths are tested on a real model.
LENGTHS = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "maxLength": 8},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    },
    "required": ["name", "hobbies"],
}


class Sink:
    def __init__(self) -> None:
        self.pieces: list[str] = []
        self.entries: list[list[TokenLogprob]] = []

    def token(self, text: str) -> None:
        self.pieces.append(text)

    def logprobs(self, entries: list[TokenLogprob]) -> None:
        self.entries.append(entries)


class Steps:
    def __init__(self) -> None:
        self.log: list[Step] = []

    def __call__(self, step: Step) -> None:
        self.log.append(step)  # on the decode thread only; read after the jobs end


@pytest.fixture(scope="module")
def steps() -> Steps:
    return Steps()


@pytest.fixture(scope="module")
def engine(tiny_model: Path, steps: Steps) -> Iterator[LlamaEngine]:
    e = LlamaEngine.load(tiny_model, slots=2, n_ctx=4096, chunk=64, threads=1, on_step=steps)
    try:
        yield e
    finally:
        e.close()


def body(**fields: Any) -> dict[str, Any]:
    return {"prompt": "Give me JSON:", "max_tokens": 1500, **fields}


def ended(evs: list[Event]) -> str:
    assert evs[-1].event == "end", evs[-1]
    reason: str = evs[-1].data["stop_reason"]
    return reason


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_wrk131_each_schema_gives_json_that_validates(worker: Proc, name: str) -> None:
    """WRK-131: random weights, three seeds each: the output parses and validates, and the
    generation ends on EOS, which the grammar allows only once the value is complete."""
    schema = SCHEMAS[name]
    for seed in (1, 2, 3):
        evs = execute(worker.url, TOKEN, body(json_schema=schema, seed=seed, temperature=1.0))
        assert ended(evs) == "EOS"
        jsonschema.validate(json.loads(text_of(evs)), schema)


def test_wrk130_a_gbnf_grammar_constrains_the_output(worker: Proc) -> None:
    grammar = 'root ::= ("yes" | "no") "." [0-9]{2}'
    outs = set()
    for seed in range(6):
        evs = execute(worker.url, TOKEN, body(grammar=grammar, seed=seed, temperature=1.0))
        assert ended(evs) == "EOS"
        outs.add(text_of(evs)[:-2])
        assert text_of(evs)[-2:].isdigit()
    assert outs <= {"yes.", "no."}


def test_wrk130_constrained_and_free_sequences_share_steps_unaffected(
    engine: LlamaEngine, steps: Steps
) -> None:
    """WRK-130, WRK-094: a constrained sequence and an unconstrained one decode in the same
    steps; the unconstrained one produces exactly what it produces alone."""
    free = GenerationJob(engine.tokenize("the quick brown fox"), 80, GREEDY, ignore_eos=True)
    alone = engine.generate(free, threading.Event(), Sink())
    grammar = schema_to_grammar(SCHEMAS["nested"])
    prompt = engine.tokenize("Give me JSON:")
    constrained = GenerationJob(prompt, 1500, Sampling(temperature=1.0, seed=5), grammar=grammar)
    first = len(steps.log)
    sink = Sink()
    futures = [
        engine.submit(constrained, threading.Event(), sink),
        engine.submit(free, threading.Event(), Sink()),
    ]
    c, f = (fut.result(timeout=120) for fut in futures)
    assert f.tokens == alone.tokens and f.stop_reason == "MAX_TOKENS"
    assert c.stop_reason == "EOS"
    jsonschema.validate(json.loads("".join(sink.pieces)), SCHEMAS["nested"])
    shared = [s for s in steps.log[first:] if len(s.sampled) == 2]
    assert shared, "the two sequences never shared a step"


def test_wrk130_eos_is_refused_until_the_grammar_is_complete(eos_model: Path) -> None:
    """WRK-130: a model whose EOS logit dominates ends within a few tokens unconstrained;
    constrained, every EOS it picks is refused (and the token drawn again) until the grammar is
    complete, then taken."""
    e = LlamaEngine.load(eos_model, slots=1, n_ctx=512, threads=1)
    try:
        prompt = e.tokenize("hello")
        free = e.generate(GenerationJob(prompt, 50, GREEDY), threading.Event(), Sink())
        assert free.stop_reason == "EOS" and free.tokens_out < 9
        sink = Sink()
        grammar = 'root ::= "id-" [0-9]{6}'
        job = GenerationJob(prompt, 50, GREEDY, grammar=grammar)
        done = e.generate(job, threading.Event(), sink)
        text = "".join(sink.pieces)
        assert done.stop_reason == "EOS"
        assert text.startswith("id-") and len(text) == 9 and text[3:].isdigit()
        assert e._loop.constrained.resampled >= 1
    finally:
        e.close()


def test_wrk132_max_tokens_inside_the_structure_is_max_tokens(worker: Proc) -> None:
    """WRK-132: cut inside the structure, the stream says MAX_TOKENS, and the text is
    indeed not a complete value."""
    schema = {"type": "array", "items": {"type": "string"}, "minItems": 6}
    evs = execute(worker.url, TOKEN, body(json_schema=schema, max_tokens=6, seed=1))
    assert ended(evs) == "MAX_TOKENS"
    assert evs[-1].data["tokens_out"] == 6
    assert text_of(evs).startswith("[")
    with pytest.raises(ValueError):
        json.loads(text_of(evs))


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("grammar", "root ::= missing-rule", "GBNF"),
        ("grammar", 'start ::= "a"', "root"),
        # 30,000 nested groups crash llama.cpp's recursive parser: refused before it sees them.
        ("grammar", "root ::= " + "(" * 30_000 + '"a"' + ")" * 30_000, "nests"),
        ("json_schema", {"type": "array", "items": {"type": "string"}, "uniqueItems": True}, ""),
        ("json_schema", {"type": "number", "minimum": 0.25, "maximum": 0.2500001}, "minimum"),
        ("json_schema", {"type": "string", "format": "email"}, "email"),
        ("json_schema", {"type": "integer", "minimum": 0, "multipleOf": 3}, "multipleOf"),
        ("json_schema", {"type": "object", "properties": {}, "required": ["x"]}, "'x'"),
        ("json_schema", {"type": "string", "pattern": "^a$", "maxLength": 3}, "maxLength"),
        ("json_schema", {"$ref": "https://example.com/s.json"}, "$ref"),
        ("json_schema", {"type": "string", "pattern": "^(a$"}, "regular expression"),
        ("json_schema", {"$ref": "#/$defs/missing"}, "converted"),
        ("json_schema", [1, 2], "JSON object"),
    ],
)
def test_wrk133_a_bad_grammar_or_schema_is_400_before_any_slot(
    worker: Proc, field: str, value: object, needle: str
) -> None:
    """WRK-133: with every slot busy and no queue, a bad grammar or schema still gets its 400
    naming the field and the problem (not 503): it is refused before a slot is asked for."""
    needle = needle or "uniqueItems"
    full = {"prompt": "hello", "max_tokens": 16000, "ignore_eos": True}
    # The slots the case before this one filled are freed as their streams' jobs are cancelled,
    # which the worker does asynchronously: start from an idle worker.
    assert wait_idle(worker.url)["slots_busy"] == 0
    client = httpx.Client(headers=AUTH, timeout=60)
    streams = [client.stream("POST", worker.url + "/execute", json=full) for _ in range(2)]
    readers = []  # kept: a reader collected early closes its stream
    try:
        for s in streams:
            readers.append(events(s.__enter__()))
            next(readers[-1])  # started: the slot is taken
        r = client.post(worker.url + "/execute", json=body(**{field: value}))
        assert r.status_code == 400, r.text
        problem = r.json()
        assert problem["code"] == "INVALID_PARAMS"
        assert [e["field"] for e in problem["errors"]] == [field]
        assert needle in problem["errors"][0]["message"]
        assert client.post(worker.url + "/tokenize", json=body(**{field: value})).status_code == 400
        health = client.get(worker.url + "/health").json()
        assert (health["slots_busy"], health["queued"]) == (2, 0)
        # The slots were truly full: a valid constrained request is refused as busy.
        ok = client.post(worker.url + "/execute", json=body(grammar='root ::= "a"'))
        assert ok.status_code == 503
    finally:
        for s in streams:
            s.__exit__(None, None, None)
        client.close()
        wait_idle(worker.url)  # the module's next tests find the slots free


def test_wrk133_field_combinations_are_400(worker: Proc) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"grammar": 'root ::= "a"', "json_schema": {"type": "string"}}, "grammar"),
        ({"grammar": 'root ::= "a"', "ignore_eos": True}, "ignore_eos"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
        ({"logprobs": "yes"}, "logprobs"),
        ({"grammar": 7}, "grammar"),
    ]
    for fields, field in cases:
        r = httpx.post(worker.url + "/execute", json=body(**fields), headers=AUTH)
        assert r.status_code == 400, fields
        assert [e["field"] for e in r.json()["errors"]] == [field], r.json()


def test_schema_converter_refuses_what_it_would_ignore() -> None:
    """The walk mirrors the port's dispatch: a keyword its branch ignores is refused."""
    with pytest.raises(SchemaError, match="uniqueItems"):
        schema_to_grammar({"type": "array", "items": {"type": "integer"}, "uniqueItems": True})
    with pytest.raises(SchemaError, match="minItems"):
        schema_to_grammar({"type": "array", "prefixItems": [{"type": "integer"}], "minItems": 1})
    # WRK-135: bounds become a digit-range grammar, however wide or one-sided.
    assert "[1-4] [0-9]{3}" in schema_to_grammar({"type": "integer", "minimum": 0, "maximum": 4999})
    assert "root ::=" in schema_to_grammar({"type": "integer", "minimum": -2, "maximum": 2})
    assert nesting_problem('root ::= "((((" [(] # (((\nx ::= (("a"))') is None
    assert nesting_problem(schema_to_grammar({"type": "string", "maxLength": 3000})) is not None
    # The port's `char` admits control characters; ours does not (JSON forbids them raw).
    assert r'char ::= [^"\\\x00-\x1F\x7F] | ' in schema_to_grammar({"type": "string"})


def logprob_events(evs: list[Event]) -> list[list[dict[str, Any]]]:
    return [e.data["logprobs"] for e in evs if e.event == "token"]


def test_wrk134_logprobs_of_each_token_and_its_top_alternatives(worker: Proc) -> None:
    """WRK-134: greedy, so the chosen token is the most likely one: it heads its own top list.
    Every value is a log-probability, the list is sorted and as long as asked, and the entries
    carry the tokens whose text the event carries."""
    evs = execute(
        worker.url,
        TOKEN,
        body(temperature=0, max_tokens=40, ignore_eos=True, logprobs=True, top_logprobs=5),
    )
    lists = logprob_events(evs)
    assert lists and all(lists)
    entries = [entry for lst in lists for entry in lst]
    assert len(entries) <= evs[-1].data["tokens_out"]
    for entry in entries:
        top = entry["top_logprobs"]
        assert len(top) == 5
        assert entry["logprob"] <= 0 and all(t["logprob"] <= 0 for t in top)
        assert [t["logprob"] for t in top] == sorted((t["logprob"] for t in top), reverse=True)
        assert (top[0]["token"], top[0]["bytes"]) == (entry["token"], entry["bytes"])
        assert top[0]["logprob"] == pytest.approx(entry["logprob"])
        assert sum(math.exp(t["logprob"]) for t in top) <= 1 + 1e-9  # a normalized distribution
    text = b"".join(bytes(entry["bytes"]) for entry in entries).decode(errors="replace")
    assert text.startswith(text_of(evs)[:20])


def test_wrk134_logprobs_under_a_grammar_and_without_top(worker: Proc) -> None:
    """The entries are the model's own log-probabilities, before the grammar: the forced token's
    logprob may be far below the top; top_logprobs 0 gives empty lists."""
    evs = execute(worker.url, TOKEN, body(json_schema=SCHEMAS["enum"], seed=3, logprobs=True))
    assert ended(evs) == "EOS"
    entries = [entry for lst in logprob_events(evs) for entry in lst]
    assert entries and all(e["top_logprobs"] == [] and e["logprob"] <= 0 for e in entries)


def test_wrk134_a_job_without_logprobs_has_no_logprobs_field(worker: Proc) -> None:
    evs = execute(worker.url, TOKEN, body(max_tokens=20, ignore_eos=True, seed=2))
    tokens = [e for e in evs if e.event == "token"]
    assert tokens and all(set(e.data) == {"t", "i"} for e in tokens)


@pytest.fixture(scope="module")
def smol_worker(smollm2_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with spawn_worker(
        smollm2_model, tmp_path_factory.mktemp("smol"), slots=2, extra=["--n-ctx", "2048"]
    ) as p:
        yield p


@pytest.mark.parametrize("name", ["nested", "bounds", "lengths"])
def test_wrk131_wrk120_smollm2_answers_in_the_schema(smol_worker: Proc, name: str) -> None:
    schema = LENGTHS if name == "lengths" else SCHEMAS[name]
    messages = [{"role": "user", "content": "Describe a person as a JSON object."}]
    evs = execute(
        smol_worker.url,
        None,
        {"messages": messages, "json_schema": schema, "max_tokens": 400, "temperature": 0},
    )
    assert ended(evs) == "EOS"
    jsonschema.validate(json.loads(text_of(evs)), schema)
