"""specs/openapi/orchestrator.yaml against a live orchestratord with a real worker: schemathesis
generates requests for every operation (valid and invalid ones); no response may be a 5xx, and
every response must match the spec (status code, content type, body schema)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.orchestratord.sdk_cluster import API_KEY, CLUSTER_TOKEN, MODEL, Cluster, run_cluster

pytestmark = pytest.mark.e2e
SPEC = Path(__file__).resolve().parents[2] / "specs" / "openapi" / "orchestrator.yaml"
schema = schemathesis.openapi.from_path(str(SPEC))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def cluster(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    tmp = tmp_path_factory.mktemp("schemathesis")
    with run_cluster(tiny_model, tmp, slots=2) as c:
        yield c


def tame(body: Any) -> None:
    """Keep generated tasks cheap and runnable: the served model, a few tokens, no tight start
    deadline. Only values that are valid already are changed, so invalid cases stay invalid."""
    if not isinstance(body, dict):
        return
    if isinstance(body.get("model"), str) and body["model"]:
        body["model"] = MODEL
    for name in ("max_tokens", "max_completion_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 8:
            body[name] = 8
    deadline = body.get("deadline_ms")
    if isinstance(deadline, int) and not isinstance(deadline, bool) and deadline >= 1:
        body["deadline_ms"] = 600_000


def token_for(path: str) -> str:
    return CLUSTER_TOKEN if path.startswith(("/v2/workers", "/v2/admin")) else API_KEY


@schema.parametrize()
@settings(
    max_examples=20,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.filter_too_much,
        HealthCheck.function_scoped_fixture,
    ],
)
def test_api_conforms_to_the_spec(case: schemathesis.Case, cluster: Cluster) -> None:
    tame(case.body)
    case.call_and_validate(
        base_url=cluster.url,
        checks=CHECKS,
        timeout=60,
        headers={"Authorization": f"Bearer {token_for(case.path)}"},
    )
