"""Embeddings tasks (`POST /v1/embeddings`): the request's validation and the reply's shape; pure.

An embeddings request becomes a `TaskRequest` with `embed_input` set, so it goes through the
same admission, queue, policy and reservation as any task (ORCH-230). The worker answers in
floats; OpenAI's `encoding_format: "base64"` (what the `openai` package asks for by default) is
the same vectors as little-endian float32, encoded here (ORCH-232).
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Sequence
from typing import Any, Literal

from orchestratord.domain.tasks import TaskRequest
from orchestratord.domain.tenancy import Caller
from shared.names import MODEL_NAME
from shared.params import FieldReader

EncodingFormat = Literal["float", "base64"]
MAX_INPUTS = 64  # the worker's own bound (WRK-110)
MAX_INPUT_CHARS = 1_000_000


def parse_embedding_request(body: object, *, caller: Caller) -> tuple[TaskRequest, EncodingFormat]:
    """Validate an OpenAI embeddings body; InvalidParams lists every bad field.

    Unknown fields are ignored, as OpenAI does, except `dimensions`, which llorch cannot honour
    (a model's vectors have its own width) and so refuses rather than ignores.
    """
    r = FieldReader(body)
    model = r.name("model", MODEL_NAME, required=True)
    raw = r.body.get("input")
    inputs: list[str] = []
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        r.fail("input", "must be a non-empty string or a list of 1 to 64 non-empty strings")
    elif len(raw) > MAX_INPUTS:
        r.fail("input", f"at most {MAX_INPUTS} inputs per request")
    else:
        for i, item in enumerate(raw):
            if not isinstance(item, str) or not item:
                r.fail(f"input[{i}]", "must be a non-empty string (token arrays are not supported)")
            elif len(item) > MAX_INPUT_CHARS:
                r.fail(f"input[{i}]", f"longer than {MAX_INPUT_CHARS} characters")
            else:
                inputs.append(item)
    fmt = r.body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        r.fail("encoding_format", 'must be "float" or "base64"')
    if r.body.get("dimensions") is not None:
        r.fail("dimensions", "is not supported: vectors have the model's own width")
    r.raise_if_failed()
    assert model is not None
    req = TaskRequest(
        model=model,
        max_tokens=0,
        embed_input=tuple(inputs),
        tenant=caller.task_tenant(None),
        key_id=caller.key_id,
    )
    return req, "base64" if fmt == "base64" else "float"


def encode_vector(vector: Sequence[float], fmt: EncodingFormat) -> list[float] | str:
    if fmt == "float":
        return list(vector)
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def vectors_of(worker_reply: Any) -> list[list[float]]:
    """The vectors of the worker's reply (OpenAI's shape, WRK-110) in input order; ValueError
    when the reply is not that shape."""
    try:
        items = sorted(worker_reply["data"], key=lambda d: int(d["index"]))
        return [[float(x) for x in d["embedding"]] for d in items]
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"the worker's /embeddings reply is malformed: {e!r}") from None


def embedding_reply(
    vectors: Sequence[Sequence[float]], prompt_tokens: int, model: str, fmt: EncodingFormat
) -> dict[str, Any]:
    """OpenAI's embeddings reply."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, fmt)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
