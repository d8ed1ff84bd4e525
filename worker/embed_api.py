"""`POST /embeddings`: pooled, normalized vectors of one string or a list (WRK-110..WRK-113).

The reply has the OpenAI embeddings shape, so orchestratord can relay it as `/v1/embeddings`
unchanged. Embedding does not take a generation slot: it runs on its own context, in the worker's
side executor, one request at a time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from shared.params import FieldReader, read_json
from shared.problem import Draining, FieldError, Internal, InvalidParams, ModelUnavailable
from worker.runner import WorkerState
from worker.types import EngineError

MAX_INPUTS = 64
EMBED_FIELDS = {"input", "model", "encoding_format"}


def parse_inputs(body: object) -> list[str]:
    """The `input` field as a list of strings; InvalidParams naming what is wrong."""
    r = FieldReader(body, known=EMBED_FIELDS)
    raw = r.body.get("input")
    inputs: list[str] = []
    if isinstance(raw, str):
        inputs = [raw]
    elif isinstance(raw, list) and raw and all(isinstance(x, str) for x in raw):
        inputs = list(raw)
    else:
        r.fail("input", "must be a string or a non-empty list of strings")
    if len(inputs) > MAX_INPUTS:
        r.fail("input", f"at most {MAX_INPUTS} inputs per request")
    for i, text in enumerate(inputs):
        if not text:
            r.fail(f"input[{i}]" if isinstance(raw, list) else "input", "must not be empty")
    fmt = r.body.get("encoding_format", "float")
    if fmt != "float":
        r.fail("encoding_format", "only 'float' is supported")
    r.raise_if_failed()
    return inputs


async def embeddings(request: Request) -> Response:
    state: WorkerState = request.state.worker
    inputs = parse_inputs(await read_json(request))
    if state.status == "draining":
        raise Draining("the worker is shutting down", retry_after_ms=1000)
    engine = state.engine
    if engine is None or state.status != "ready":
        raise ModelUnavailable(f"the model is {state.status}", retry_after_ms=1000)
    if not engine.embeddings.available:
        raise InvalidParams(
            f"model {state.settings.model_name} cannot embed: {engine.embeddings.reason}",
            errors=[{"field": "model", "message": "this model cannot produce embeddings"}],
        )
    loop = asyncio.get_running_loop()
    # Off the event loop, like a prompt (WRK-031): 64 inputs can be long.
    tokens = await loop.run_in_executor(
        state.tokenizer, lambda: [engine.tokenize(text) for text in inputs]
    )
    limit = engine.embed_max_tokens
    too_long: list[FieldError] = [
        {"field": f"input[{i}]" if len(inputs) > 1 else "input", "message": f"{len(t)} tokens"}
        for i, t in enumerate(tokens)
        if len(t) > limit
    ]
    if too_long:
        raise InvalidParams(f"an input is longer than {limit} tokens", errors=too_long)
    try:
        vectors = await loop.run_in_executor(state.executor, engine.embed, tokens)
    except EngineError as e:
        raise Internal(f"embedding failed: {e}") from e
    state.metrics.embeddings.inc(len(inputs))
    n = sum(len(t) for t in tokens)
    data: list[dict[str, Any]] = [
        {"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)
    ]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "model": state.settings.model_name,
            "usage": {"prompt_tokens": n, "total_tokens": n},
        }
    )
