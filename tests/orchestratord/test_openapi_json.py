"""GET /openapi.json serves the normative OpenAPI document, open like /health."""

from __future__ import annotations

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
