"""Fixtures for orchestratord tests: an in-process app (TestClient) on a temporary database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from orchestratord.app import create_app
from orchestratord.settings import Settings

AppFactory = Callable[..., Any]


@pytest.fixture
def orchd(tmp_path: Path) -> AppFactory:
    """`with orchd(**settings) as client:` an in-process orchestratord on its own database."""

    @contextmanager
    def make(**kwargs: Any) -> Iterator[TestClient]:
        kwargs.setdefault("state_dir", tmp_path / "state")
        # Most in-process tests queue tasks for "m" with no worker: the operator expects it.
        kwargs.setdefault("expect_models", ("m",))
        with TestClient(create_app(Settings(**kwargs))) as client:
            yield client

    return make
