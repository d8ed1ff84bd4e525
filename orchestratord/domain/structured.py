"""A task's output constraints and logprobs request, validated at the HTTP edge; pure.

`grammar` (GBNF) or `json_schema` (a JSON Schema object) constrain what the worker may sample
(the worker compiles either to a grammar, WRK-130/131); `logprobs` and `top_logprobs` ask the
worker for each token's log-probability and its `top_logprobs` most likely alternatives
(WRK-134). orchestratord checks only the shape and size of these fields, with the worker's
limits (ORCH-240): whether a schema or grammar compiles is the worker's call, and its 400 fails
the task with `INVALID_PARAMS` (ORCH-052).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.params import FieldReader

# Generous for real schemas and grammars, small next to a prompt (MAX_PROMPT_CHARS): a
# constraint is compiled by the worker for every task that carries it.
MAX_GRAMMAR_CHARS = 65_536
MAX_SCHEMA_CHARS = 65_536  # of the schema as compact JSON
MAX_TOP_LOGPROBS = 20  # OpenAI's own bound

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


@dataclass(frozen=True, slots=True)
class Structure:
    """What a task asks beyond plain sampling: at most one constraint, and logprobs."""

    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    logprobs: bool = False
    top_logprobs: int = 0


FIELDS = frozenset({"grammar", "json_schema", "logprobs", "top_logprobs"})


def read_structure(r: FieldReader) -> Structure:
    """Read the four fields from `r.body`, recording every problem in `r` (ORCH-240)."""
    grammar = r.string("grammar", max_len=MAX_GRAMMAR_CHARS)
    schema = r.body.get("json_schema")
    if schema is not None:
        if not isinstance(schema, Mapping):
            r.fail("json_schema", "must be a JSON Schema object")
            schema = None
        elif len(_dumps(schema)) > MAX_SCHEMA_CHARS:
            r.fail("json_schema", f"is at most {MAX_SCHEMA_CHARS} characters as JSON")
            schema = None
        else:
            schema = dict(schema)
    if grammar is not None and schema is not None:
        r.fail("grammar", "give at most one of grammar and json_schema")
    if r.body.get("ignore_eos") is True and (grammar is not None or schema is not None):
        # The worker refuses it too: a grammar that is complete admits only the end of text.
        r.fail("ignore_eos", "cannot be combined with grammar or json_schema")
    logprobs = r.boolean("logprobs", False)
    top = r.integer("top_logprobs", 0, 0, MAX_TOP_LOGPROBS) or 0
    if top > 0 and not logprobs:
        r.fail("top_logprobs", "needs logprobs: true")
    return Structure(grammar, schema, logprobs, top)
