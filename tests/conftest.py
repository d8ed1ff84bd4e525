from __future__ import annotations

from pathlib import Path

import pytest

from shared.testmodel import write_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The deterministic tiny llama GGUF, written once per test session."""
    return write_model(tmp_path_factory.mktemp("models") / "llorch-tiny.gguf")


@pytest.fixture(scope="session")
def eos_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model whose EOS logit dominates, so generations end on EOS quickly."""
    return write_model(tmp_path_factory.mktemp("models") / "llorch-eos.gguf", eos_bias=8.0)


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (`@pytest.mark.anyio`) run on asyncio, the loop the daemons use."""
    return "asyncio"
