from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import Proc, spawn_worker

TOKEN = "worker-test-token"


@pytest.fixture(scope="module")
def worker(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """A real llorch-workerd with two slots and a token, shared by a module's tests."""
    with spawn_worker(
        tiny_model,
        tmp_path_factory.mktemp("w"),
        slots=2,
        token=TOKEN,
        extra=["--max-queue", "0", "--n-ctx", "16384"],
    ) as p:
        yield p
