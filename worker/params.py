"""The body of `POST /execute`, validated at the edge."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from shared.params import GENERATION_FIELDS, FieldReader, GenerationParams

_JOB_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
EXECUTE_FIELDS = set(GENERATION_FIELDS | {"job_id", "template", "ignore_eos"})


@dataclass(frozen=True, slots=True)
class ExecuteRequest:
    job_id: str
    gen: GenerationParams
    template: str | None
    ignore_eos: bool


def parse_execute(body: object) -> ExecuteRequest:
    """Validate an execute body; raises InvalidParams listing every bad field."""
    r = FieldReader(body, known=EXECUTE_FIELDS)
    job_id = r.string("job_id", max_len=128)
    if job_id is not None and not _JOB_ID.match(job_id):
        r.fail("job_id", "may contain only letters, digits and . _ : -")
    gen = r.generation()
    template = r.string("template", max_len=64)
    ignore_eos = r.boolean("ignore_eos", False)
    r.raise_if_failed()
    return ExecuteRequest(job_id or uuid.uuid4().hex, gen, template, ignore_eos)
