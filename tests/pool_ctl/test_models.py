"""`models import|list|verify|rm` through the CLI's entry point, on real GGUF files."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from tests.pool_ctl.helpers import call


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("LLORCH_HOME", str(home))
    monkeypatch.delenv("LLORCH_DEBUG", raising=False)
    return home


def test_import_in_place_list_verify_rm(
    home: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """POOL-016: rm of an in-place import keeps the user's file outside models/."""
    model = tmp_path / "My-Model.Q8_0.gguf"
    shutil.copyfile(tiny_model, model)
    r = call(["models", "import", str(model), "--json"], capsys)
    assert r.code == 0, r.err
    entry = r.json()
    assert entry["id"] == "my-model.q8_0" and entry["path"] == str(model)
    assert entry["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    assert entry["source"] == "import" and entry["repo"] is None
    assert entry["architecture"] == "llama" and entry["name"] == "llorch-tiny"

    listing = call(["models", "list"], capsys).out.splitlines()
    assert listing[0].split()[:3] == ["ID", "ARCH", "PARAMS"]
    assert listing[1].split()[0] == "my-model.q8_0"
    assert call(["models", "verify", "--json"], capsys).json() == {
        "results": [{"id": "my-model.q8_0", "ok": True, "problem": None}]
    }

    with model.open("r+b") as f:  # same size, different bytes
        f.seek(-8, 2)
        f.write(b"\xff" * 8)
    r = call(["models", "verify"], capsys)
    assert r.code == 9
    assert "FAILED  my-model.q8_0: sha256" in r.out
    assert (
        r.err == "llorch-pool: error: 1 model(s) failed verification: my-model.q8_0; "
        "download or import them again\n"
    )

    r = call(["models", "rm", "my-model.q8_0"], capsys)
    assert r.code == 0 and "kept (outside models/)" in r.out
    assert model.exists()  # a file the user owns is never deleted
    assert call(["models", "list", "--json"], capsys).json() == {"models": []}
    r = call(["models", "rm", "my-model.q8_0"], capsys)
    assert r.code == 3 and "not in the catalog" in r.err


def test_import_copy_owns_the_file(
    home: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """POOL-016: rm deletes a file that lies under the home's models/."""
    r = call(["models", "import", str(tiny_model), "--copy", "--id", "tiny", "--json"], capsys)
    assert r.code == 0, r.err
    copied = Path(r.json()["path"])
    assert copied.parent == home / "models" / "imported" and copied.exists()
    verify_missing = call(["models", "verify", "tiny"], capsys)
    assert verify_missing.code == 0
    r = call(["models", "rm", "tiny", "--json"], capsys)
    assert r.json()["deleted_file"] is True and not copied.exists()
    assert tiny_model.exists()


def test_import_refuses_what_is_not_a_gguf(
    home: Path, tmp_path: Path, tiny_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """POOL-011: no GGUF magic, or a file GGUFReader cannot parse, is exit 9 and never enters
    the catalog."""
    text = tmp_path / "notes.gguf"
    text.write_text("hello")
    r = call(["models", "import", str(text)], capsys)
    assert r.code == 9 and "is not a GGUF file" in r.err
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(tiny_model.read_bytes()[:2000])
    r = call(["models", "import", str(truncated)], capsys)
    assert r.code == 9 and "truncated or corrupt" in r.err
    r = call(["models", "import", str(tmp_path / "absent.gguf")], capsys)
    assert r.code == 10 and "is not a file" in r.err
    assert not (home / "catalog.json").exists()


def test_missing_file_fails_verify(
    home: Path, tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "gone.gguf"
    shutil.copyfile(tiny_model, model)
    assert call(["models", "import", str(model)], capsys).code == 0
    model.unlink()
    r = call(["models", "verify", "gone", "--json"], capsys)
    assert r.code == 9
    assert r.json()["results"][0]["problem"] == f"file {model} is missing"


def test_a_corrupt_catalog_is_one_clear_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    home.mkdir(parents=True)
    (home / "catalog.json").write_text("{not json")
    r = call(["models", "list"], capsys)
    assert r.code == 9
    assert r.err.count("\n") == 1 and "catalog" in r.err and "not valid JSON" in r.err
    r = call(["--debug", "models", "list"], capsys)
    assert r.code == 9 and "Traceback" in r.err
