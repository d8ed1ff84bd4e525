"""WRK-131, WRK-135: fifty seeded schemas (tests/schema_corpus.py) on the random-weight tiny
model through a real worker: every output ends on EOS, parses and validates, so its validity
(bounded numbers included) comes from the grammar alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.schema_corpus import schemas
from tests.support import Proc, spawn_worker
from tests.worker.conftest import TOKEN
from tests.worker.sse_client import execute, text_of

pytestmark = pytest.mark.e2e
SLOTS = 4


@pytest.fixture(scope="module")
def corpus_worker(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    with spawn_worker(
        tiny_model, tmp_path_factory.mktemp("w"), slots=SLOTS, token=TOKEN, extra=["--threads", "1"]
    ) as p:
        yield p


def test_wrk131_wrk135_fifty_generated_schemas_validate(corpus_worker: Proc) -> None:
    """WRK-131, WRK-135: two seeds per schema, four at a time in one batch."""

    def run(job: tuple[int, dict[str, Any]]) -> tuple[int, str, str]:
        i, schema = job
        body = {
            "prompt": "JSON:",
            "max_tokens": 1000,
            "json_schema": schema,
            "seed": i,
            "temperature": 1.0,
        }
        evs = execute(corpus_worker.url, TOKEN, body, timeout=300)
        return i, evs[-1].data.get("stop_reason", evs[-1].event), text_of(evs)

    corpus = schemas()
    jobs = [(i, s) for i, s in enumerate(corpus)] + [(i + 100, s) for i, s in enumerate(corpus)]
    with ThreadPoolExecutor(SLOTS) as pool:
        for i, reason, text in pool.map(run, jobs):
            assert reason == "EOS", (i, reason, text)
            jsonschema.validate(json.loads(text), corpus[i % 100])
