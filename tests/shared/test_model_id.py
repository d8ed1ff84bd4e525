"""The model id: the pool catalog's default id is the name a hand-started worker registers."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from pool_ctl.models import import_file
from pool_ctl.settings import Settings
from shared.model_id import is_model_id, model_id_from_path
from tests.support import spawn_worker


def test_model_id_from_path() -> None:
    """POOL-013, WRK-002: lower case, without `.gguf`, directories ignored."""
    assert model_id_from_path("/m/SmolLM2-135M-Instruct.Q4_1.gguf") == "smollm2-135m-instruct.q4_1"
    assert model_id_from_path("Qwen2.5-0.5B-Instruct-Q4_K_M.GGUF") == "qwen2.5-0.5b-instruct-q4_k_m"
    assert model_id_from_path("plain") == "plain"
    assert is_model_id("smollm2-135m-instruct.q4_1") and not is_model_id("Upper")


@pytest.mark.e2e
def test_catalog_id_equals_the_name_a_hand_started_worker_registers(
    tiny_model: Path, tmp_path: Path
) -> None:
    """POOL-013, WRK-002: the same GGUF is one model id in the catalog and in /health."""
    model = tmp_path / "SmolLM2-Tiny-Instruct.Q4_1.gguf"
    shutil.copyfile(tiny_model, model)
    entry = import_file(Settings.build(tmp_path / "home"), model)
    with spawn_worker(model, tmp_path) as worker:
        health = httpx.get(worker.url + "/health", timeout=5).json()
    assert entry["id"] == health["model"] == "smollm2-tiny-instruct.q4_1"
