from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.testmodel import write_model
from tests.pool_ctl.hubserver import FakeHub, serve

REPO = "llorch/Tiny-GGUF"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "llorch-home"


@pytest.fixture(scope="session")
def big_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GGUF of about 27 MB: larger than huggingface_hub's 10 MiB download chunk, so a broken
    transfer has written something to resume from."""
    path = tmp_path_factory.mktemp("models") / "llorch-big.gguf"
    return write_model(path, dim=512, n_layers=2, ff=1536, name="llorch-big")


@pytest.fixture
def hub(tiny_model: Path, eos_model: Path) -> Iterator[FakeHub]:
    """A loopback hub with one GGUF repository: two files share the quant q8_0."""
    tiny, eos = tiny_model.read_bytes(), eos_model.read_bytes()
    repos = {
        REPO: {
            "tiny-f32.gguf": tiny,
            "tiny-q8_0.gguf": eos,
            "tiny-chat-q8_0.gguf": tiny,
            "README.md": b"# tiny\n",
        }
    }
    with serve(FakeHub(repos)) as h:
        yield h


@pytest.fixture
def cli_env(home: Path, hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment of this test process set for in-process CLI calls; returns the home."""
    for var in ("HF_HUB_OFFLINE", "HF_TOKEN", "LLORCH_DEBUG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LLORCH_HOME", str(home))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    return home
