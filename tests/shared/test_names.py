"""The charsets of worker ids, pool names and model names: one definition (shared/names.py),
the same expressions in the OpenAPI document, real names accepted, markup and paths refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestratord.fleet.desired import parse_fleet
from shared.model_id import is_model_id, model_id_from_path
from shared.names import CATALOG_ID, MODEL_NAME, POOL_NAME, WORKER_ID
from shared.problem import InvalidParams

SPEC = Path(__file__).resolve().parents[2] / "specs" / "openapi" / "orchestrator.yaml"
XSS = "<img src=x onerror=alert(1)>"


def test_orch_045_the_openapi_patterns_are_the_shared_definitions() -> None:
    """ORCH-045: the OpenAPI document's patterns are the expressions of shared/names.py, and
    every worker id, pool and model field of a request refers to them."""
    spec: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    schemas = spec["components"]["schemas"]
    for name, rule in (("WorkerId", WORKER_ID), ("PoolName", POOL_NAME), ("ModelName", MODEL_NAME)):
        assert (schemas[name]["pattern"], schemas[name]["maxLength"]) == (rule.pattern, 128)
    assert spec["components"]["parameters"]["WorkerId"]["schema"] == {
        "$ref": "#/components/schemas/WorkerId"
    }
    fleet_ids = schemas["Fleet"]["properties"]["models"]["propertyNames"]["pattern"]
    assert fleet_ids == CATALOG_ID.pattern
    requests = ["TaskRequest", "CompareRequest", "ChatCompletionRequest", "CompletionRequest"]
    for schema in [*requests, "EmbeddingRequest", "WorkerRegistration"]:
        model = schemas[schema]["properties"]["model"]
        assert model == {"$ref": "#/components/schemas/ModelName"}, schema
    registration = schemas["WorkerRegistration"]["properties"]
    assert registration["worker_id"] == {"$ref": "#/components/schemas/WorkerId"}
    assert registration["pool"]["allOf"] == [{"$ref": "#/components/schemas/PoolName"}]
    pools = schemas["ModelSpec"]["properties"]["pools"]["items"]
    assert pools == {"$ref": "#/components/schemas/PoolName"}


@pytest.mark.parametrize(
    "name",
    [
        "llorch-tiny",
        "smollm2-135m-instruct.q4_1",
        model_id_from_path("/m/Qwen2.5-0.5B-Instruct-Q4_K_M.gguf"),
        "bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M",
        "Qwen/Qwen2.5-0.5B-Instruct-GGUF@main:qwen2.5-0.5b-instruct-q4_k_m.gguf",
        "llama-3+lora",
        "m" * 128,
    ],
)
def test_orch_045_real_model_names_pass(name: str) -> None:
    """ORCH-045: catalog ids, Hugging Face references and file-derived ids are model names."""
    assert MODEL_NAME.matches(name) and MODEL_NAME.problem(name) is None


@pytest.mark.parametrize("name", ["w-3f2a9c0d1e4b", "gpu-box-1-8001", "gpu-box-1.lan", "A_b.c-9"])
def test_orch_045_real_worker_ids_and_pools_pass(name: str) -> None:
    """ORCH-045, POOL-041: llorch-workerd's generated ids, llorch-pool's HOST-PORT, host names."""
    assert WORKER_ID.matches(name) and POOL_NAME.matches(name)


@pytest.mark.parametrize(
    "name", [XSS, "", " m", "m ", "m\n", "-m", ".m", "/m", "m;rm -rf", "m$(id)", "é", "m" * 129]
)
def test_orch_045_other_names_are_refused(name: str) -> None:
    """ORCH-045: markup, spaces, shell characters, a trailing newline, a leading punctuation
    mark and over 128 characters are no name of any kind; the message does not repeat it."""
    for rule in (MODEL_NAME, WORKER_ID, POOL_NAME, CATALOG_ID):
        problem = rule.problem(name)
        assert problem is not None and not rule.matches(name), (rule.what, name)
        assert problem.startswith("must be 1-128 characters") and (not name or name not in problem)


def test_orch_045_worker_ids_and_pools_are_one_path_segment_and_unambiguous() -> None:
    """ORCH-045: no '/' (a URL path segment, a file name) and no ':' (`worker:ID`) in worker
    ids and pool names; model names may have both."""
    for name in ("a/b", "worker:a", "a@b", "a+b"):
        assert not WORKER_ID.matches(name) and not POOL_NAME.matches(name)
        assert MODEL_NAME.matches(name)


def test_pool_013_catalog_ids_are_lower_case_model_names() -> None:
    """POOL-013, ORCH-045: a catalog id is a model name; upper case is a model name only."""
    assert is_model_id("qwen2.5-0.5b") and MODEL_NAME.matches("qwen2.5-0.5b")
    assert not is_model_id("Qwen2.5") and MODEL_NAME.matches("Qwen2.5")


def test_orch_045_flt_001_fleet_models_are_catalog_ids_and_pools_pool_names() -> None:
    """ORCH-045, FLT-001: the desired state keys models by catalog id (what `llorch-pool
    models download --id` takes) and lists pools by pool name; both are checked at once."""
    body: dict[str, Any] = {
        "models": {
            XSS: {"source": "hf:a/b:q4", "pools": ["p"]},
            "Upper": {"source": "hf:a/b:q4", "pools": ["p"]},
            "m": {"source": f"catalog:{XSS}", "pools": [XSS]},
        }
    }
    with pytest.raises(InvalidParams) as info:
        parse_fleet(body)
    assert {e["field"] for e in info.value.errors} == {
        f"models.{XSS}",
        "models.Upper",
        "models.m.source",
        "models.m.pools",
    }
    good = {"source": "catalog:qwen2.5-0.5b", "pools": ["gpu-box-1.lan", "p_2"]}
    assert parse_fleet({"models": {"qwen2.5-0.5b": good}}).models[0].pools == (
        "gpu-box-1.lan",
        "p_2",
    )
