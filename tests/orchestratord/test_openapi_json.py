"""GET /openapi.json serves the normative OpenAPI document, open like /health."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import yaml

from tests.orchestratord.conftest import AppFactory

SPEC = Path(__file__).resolve().parents[2] / "specs" / "openapi" / "orchestrator.yaml"


def test_openapi_json_is_the_spec(orchd: AppFactory) -> None:
    """ORCH-017: /openapi.json is specs/openapi/orchestrator.yaml as JSON, without a key."""
    with orchd(api_keys=("k",), cluster_token="t") as c:
        r = c.get("/openapi.json")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    assert r.json() == yaml.safe_load(SPEC.read_text())
    assert r.json()["openapi"].startswith("3.") and "/v2/tasks" in r.json()["paths"]


_reads: list[str] | None = None


def _audit(event: str, args: tuple[object, ...]) -> None:
    if _reads is not None and event == "open" and str(args[0]).endswith("openapi.yaml"):
        _reads.append(str(args[0]))


sys.addaudithook(_audit)  # for the whole run (a hook cannot be removed); idle when _reads is None


@contextlib.contextmanager
def reads_of_the_yaml() -> Iterator[list[str]]:
    """Every opening of an `openapi.yaml` in this process while inside, the app's included."""
    global _reads
    _reads = []
    try:
        yield _reads
    finally:
        _reads = None


def test_orch_018_the_document_is_built_once_at_start_up(orchd: AppFactory) -> None:
    """ORCH-018: the lifespan reads and converts the YAML once; requests only send the bytes."""
    with reads_of_the_yaml() as reads, orchd() as c:
        at_start = len(reads)
        first = c.get("/openapi.json")
        second = c.get("/openapi.json")
        assert len(reads) == at_start  # no request reads it
        assert at_start == 1  # the lifespan's one read
    assert first.status_code == second.status_code == 200
    assert first.content == second.content
    assert first.json() == yaml.safe_load(SPEC.read_text())
