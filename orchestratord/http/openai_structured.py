"""OpenAI's `response_format` and logprobs on /v1, mapped to and from llorch's task fields; pure.

Requests (ORCH-242, ORCH-243): `response_format` `{"type": "json_object"}` becomes the task's
`json_schema` `{"type": "object"}`, `{"type": "json_schema", "json_schema": {"name", "schema",
"strict"}}` its `schema` (the worker always enforces it, so `strict` changes nothing), and
`{"type": "text"}` nothing. Chat's `logprobs: true` with `top_logprobs: k`, and the legacy
completions' `logprobs: k`, become the task's `logprobs` and `top_logprobs`.

Replies: the worker's token events carry `logprobs` entries already in OpenAI's
ChatCompletionTokenLogprob shape; `Logprobs` passes them on as chat's `logprobs.content`, or
reshapes them into the legacy completions object (`tokens`, `token_logprobs`, `top_logprobs`
dicts, `text_offset`), per stream chunk and for the whole reply.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from orchestratord.domain.structured import MAX_TOP_LOGPROBS

GENERIC_OBJECT: dict[str, Any] = {"type": "object"}
_FORMATS = ("text", "json_object", "json_schema")


def structure_fields(
    kind: Literal["chat", "completion"], body: Mapping[str, Any], errors: list[tuple[str, str]]
) -> dict[str, Any]:
    """The `/v2` task fields for the body's response_format and logprobs; problems go to
    `errors` as (param, message)."""
    out: dict[str, Any] = {}
    schema = _response_format(body.get("response_format"), errors)
    if schema is not None:
        out["json_schema"] = schema
    if kind == "chat":
        logprobs = body.get("logprobs")
        top = body.get("top_logprobs")
        if logprobs is not None and not isinstance(logprobs, bool):
            errors.append(("logprobs", "must be true or false"))
        if top is not None and not _top_ok(top):
            errors.append(("top_logprobs", f"must be an integer between 0 and {MAX_TOP_LOGPROBS}"))
        elif top and logprobs is not True:
            errors.append(("top_logprobs", "needs logprobs: true"))
        if logprobs is True:
            out["logprobs"] = True
            if top:
                out["top_logprobs"] = top
    else:
        k = body.get("logprobs")
        if k is not None:
            if not _top_ok(k):
                errors.append(("logprobs", f"must be an integer between 0 and {MAX_TOP_LOGPROBS}"))
            else:
                out["logprobs"] = True
                if k:
                    out["top_logprobs"] = k
    return out


def _top_ok(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOP_LOGPROBS


def _response_format(fmt: Any, errors: list[tuple[str, str]]) -> dict[str, Any] | None:
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if kind not in _FORMATS:
        errors.append(("response_format", 'type must be "text", "json_object" or "json_schema"'))
        return None
    assert isinstance(fmt, Mapping)
    if kind == "text":
        return None
    if kind == "json_object":
        return dict(GENERIC_OBJECT)
    spec = fmt.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("name"), str):
        errors.append(("response_format", "json_schema must be an object with a name"))
        return None
    schema = spec.get("schema")
    if schema is None:
        return dict(GENERIC_OBJECT)  # OpenAI lets it out: any JSON object then
    if not isinstance(schema, Mapping):
        errors.append(("response_format", "json_schema.schema must be a JSON Schema object"))
        return None
    return dict(schema)


class Logprobs:
    """One task's logprobs in OpenAI's shape: per chunk, and collected for the final object.

    `start` is where the generated text begins for the legacy `text_offset` (the prompt's
    length: OpenAI counts offsets from the start of the prompt).
    """

    __slots__ = ("_entries", "_offset", "kind", "start")

    def __init__(self, kind: Literal["chat", "completion"], start: int = 0) -> None:
        self.kind = kind
        self.start = self._offset = start
        self._entries: list[Any] = []

    def chunk(self, entries: Any) -> dict[str, Any] | None:
        """The `logprobs` member of one chunk for a token event's entries (None: none sent)."""
        if not isinstance(entries, list):
            return None
        self._entries.extend(entries)
        shaped, self._offset = self._shape(entries, self._offset)
        return shaped

    def add(self, entries: Any) -> None:
        """Keep a token event's entries for `whole` (a reply that is not streamed)."""
        if isinstance(entries, list):
            self._entries.extend(entries)

    def whole(self) -> dict[str, Any]:
        """The `logprobs` member of the final object: every token's."""
        return self._shape(self._entries, self.start)[0]

    def _shape(self, entries: list[Any], offset: int) -> tuple[dict[str, Any], int]:
        if self.kind == "chat":
            return {"content": entries, "refusal": None}, offset
        tokens = [_token(e) for e in entries]
        offsets: list[int] = []
        for token in tokens:
            offsets.append(offset)
            offset += len(token)
        shaped = {
            "tokens": tokens,
            "token_logprobs": [_logprob(e) for e in entries],
            "top_logprobs": [_top_dict(e) for e in entries],
            "text_offset": offsets,
        }
        return shaped, offset


def _token(entry: Any) -> str:
    return str(entry.get("token", "")) if isinstance(entry, Mapping) else ""


def _logprob(entry: Any) -> float | None:
    value = entry.get("logprob") if isinstance(entry, Mapping) else None
    return float(value) if isinstance(value, int | float) else None


def _top_dict(entry: Any) -> dict[str, float]:
    top = entry.get("top_logprobs") if isinstance(entry, Mapping) else None
    out: dict[str, float] = {}
    for alt in top if isinstance(top, list) else ():
        lp = _logprob(alt)
        if lp is not None:
            out.setdefault(_token(alt), lp)
    return out


def logprobs_for(kind: Literal["chat", "completion"], task: Mapping[str, Any]) -> Logprobs | None:
    """The task's `Logprobs` when its body (openai_task_body's) asks for them, else None."""
    if task.get("logprobs") is not True:
        return None
    prompt = task.get("prompt")
    return Logprobs(kind, len(prompt) if isinstance(prompt, str) else 0)
