"""The body of `POST /execute`, validated at the edge."""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.params import GENERATION_FIELDS, FieldReader, GenerationParams

_JOB_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
EXECUTE_FIELDS = set(
    GENERATION_FIELDS
    | {
        "job_id",
        "template",
        "ignore_eos",
        "grammar",
        "json_schema",
        "logprobs",
        "top_logprobs",
        "n",
        "resume_tokens",
        "resume_index",
        "token_ids",
    }
)
MAX_GRAMMAR_CHARS = 65_536
MAX_TOP_LOGPROBS = 20
MAX_CHOICES = 8
MAX_RESUME_TOKENS = 32768  # at most max_tokens' ceiling (shared/params.py) were generated


@dataclass(frozen=True, slots=True)
class ExecuteRequest:
    job_id: str
    gen: GenerationParams
    template: str | None
    ignore_eos: bool
    grammar: str | None = None  # GBNF with a `root` rule (WRK-130)
    json_schema: Mapping[str, Any] | None = None  # converted to GBNF off the loop (WRK-131)
    logprobs: bool = False  # WRK-134
    top_logprobs: int = 0
    n: int = 1  # choices of one prompt (WRK-140)
    # A job that resumes another's generation (WRK-160): the ids it had generated, prefilled
    # after the prompt; the `i` of this job's first token event; ids on token events (WRK-161).
    resume_tokens: tuple[int, ...] = ()
    resume_index: int = 0
    token_ids: bool = False


def parse_execute(body: object) -> ExecuteRequest:
    """Validate an execute body; raises InvalidParams listing every bad field."""
    r = FieldReader(body, known=EXECUTE_FIELDS)
    job_id = r.string("job_id", max_len=128)
    if job_id is not None and not _JOB_ID.match(job_id):
        r.fail("job_id", "may contain only letters, digits and . _ : -")
    gen = r.generation()
    template = r.string("template", max_len=64)
    ignore_eos = r.boolean("ignore_eos", False)
    grammar = r.string("grammar", max_len=MAX_GRAMMAR_CHARS)
    schema = r.body.get("json_schema")
    if schema is not None and not isinstance(schema, Mapping):
        r.fail("json_schema", "must be a JSON object (a JSON Schema)")
        schema = None
    if grammar is not None and schema is not None:
        r.fail("grammar", "at most one of grammar or json_schema")
    if ignore_eos and (grammar is not None or schema is not None):
        # A complete grammar admits only EOS: banning it would leave nothing to sample.
        r.fail("ignore_eos", "cannot be combined with grammar or json_schema")
    logprobs = r.boolean("logprobs", False)
    top = r.integer("top_logprobs", 0, 0, MAX_TOP_LOGPROBS) or 0
    if top and not logprobs:
        r.fail("top_logprobs", "needs logprobs: true")
    n = r.integer("n", 1, 1, MAX_CHOICES) or 1
    resume = _resume_tokens(r)
    if resume and n > 1:
        r.fail("resume_tokens", "cannot be combined with n > 1")
    resume_index = r.integer("resume_index", 0, 0, MAX_RESUME_TOKENS) or 0
    token_ids = r.boolean("token_ids", False)
    r.raise_if_failed()
    return ExecuteRequest(
        job_id or uuid.uuid4().hex,
        gen,
        template,
        ignore_eos,
        grammar,
        schema,
        logprobs,
        top,
        n,
        resume,
        resume_index,
        token_ids,
    )


def _resume_tokens(r: FieldReader) -> tuple[int, ...]:
    value = r.body.get("resume_tokens", [])
    if (
        not isinstance(value, list)
        or len(value) > MAX_RESUME_TOKENS
        or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)
    ):
        r.fail("resume_tokens", f"must be a list of at most {MAX_RESUME_TOKENS} token ids")
        return ()
    return tuple(value)
