"""`models download` through huggingface_hub against a loopback hub (HF_ENDPOINT)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from tests.pool_ctl.conftest import REPO
from tests.pool_ctl.helpers import call, pool_env, run_pool, start_pool
from tests.pool_ctl.hubserver import COMMIT, FakeHub

pytestmark = pytest.mark.e2e


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_by_file_name_fills_the_catalog(home: Path, hub: FakeHub) -> None:
    env = pool_env(home, hub.url)
    r = run_pool(["models", "download", f"{REPO}:tiny-f32.gguf", "--json"], env)
    assert r.code == 0, r.err
    entry = r.json()
    expected = hub.repos[REPO]["tiny-f32.gguf"]
    assert entry["id"] == "tiny-f32"
    assert entry["sha256"] == sha(expected)
    assert entry["size_bytes"] == len(expected)
    assert entry["revision"] == COMMIT
    assert entry["repo"] == REPO and entry["source"] == "hf"
    assert (entry["architecture"], entry["context_length"], entry["quantization"]) == (
        "llama",
        4096,
        "F32",
    )
    assert entry["chat_template"] == "embedded" and entry["chat_family"] == "chatml"
    assert entry["parameter_count"] > 100_000
    path = Path(entry["path"])
    assert path.is_relative_to(home / "models") and path.read_bytes() == expected
    listed = run_pool(["models", "list", "--json"], env).json()["models"]
    assert [m["id"] for m in listed] == ["tiny-f32"]
    assert json.loads((home / "catalog.json").read_text())["models"]["tiny-f32"] == entry
    verify = run_pool(["models", "verify"], env)
    assert verify.code == 0 and "ok      tiny-f32" in verify.out


def test_download_by_quant_picks_the_one_match(
    cli_env: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    r = call(["models", "download", f"{REPO}:F32", "--json"], capsys)
    assert r.code == 0, r.err
    assert r.json()["filename"] == "tiny-f32.gguf"


def test_ambiguous_quant_lists_the_choices(
    cli_env: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    r = call(["models", "download", f"{REPO}:q8_0"], capsys)
    assert r.code == 4
    assert r.err.count("\n") == 1 and r.err.startswith("llorch-pool: error: ")
    assert "ambiguous" in r.err
    assert "tiny-q8_0.gguf" in r.err and "tiny-chat-q8_0.gguf" in r.err
    assert not (cli_env / "catalog.json").exists()


def test_missing_quant_lists_every_gguf(
    cli_env: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    r = call(["models", "download", f"{REPO}:q4_k_m"], capsys)
    assert r.code == 4
    for name in ("tiny-f32.gguf", "tiny-q8_0.gguf", "tiny-chat-q8_0.gguf"):
        assert name in r.err
    assert "README.md" not in r.err


def test_missing_file_and_repo_are_clear(
    cli_env: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    r = call(["models", "download", f"{REPO}:nope.gguf"], capsys)
    assert r.code == 4 and "has no file 'nope.gguf'" in r.err
    r = call(["models", "download", "llorch/Missing-GGUF:q4_k_m"], capsys)
    assert r.code == 5 and "llorch/Missing-GGUF not found" in r.err
    r = call(["models", "download", "not a repo:q4"], capsys)
    assert r.code == 4 and "not a Hugging Face repository id" in r.err


def test_hf_token_is_sent(home: Path, hub: FakeHub) -> None:
    hub.required_token = "hf_secret"
    r = run_pool(["models", "download", f"{REPO}:tiny-f32.gguf"], pool_env(home, hub.url))
    assert r.code == 5 and "HF_TOKEN" in r.err.splitlines()[-1]
    r = run_pool(
        ["models", "download", f"{REPO}:tiny-f32.gguf"],
        pool_env(home, hub.url, HF_TOKEN="hf_secret"),
    )
    assert r.code == 0, r.err
    assert hub.gets("tiny-f32.gguf")[-1].authorization == "Bearer hf_secret"


def test_interrupted_download_resumes_where_it_stopped(
    home: Path, hub: FakeHub, big_model: Path
) -> None:
    data = big_model.read_bytes()
    hub.repos[REPO]["big-f32.gguf"] = data
    cut = len(data) * 2 // 3
    hub.cut_after["big-f32.gguf"] = cut
    r = run_pool(["models", "download", f"{REPO}:big-f32.gguf", "--json"], pool_env(home, hub.url))
    assert r.code == 0, r.err
    first, second = hub.gets("big-f32.gguf")
    # The first transfer broke after `cut` bytes; the second asked only for what was missing.
    assert first.range is None
    assert second.range is not None and second.range.startswith("bytes=")
    resumed_at = int(second.range.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= cut
    entry = r.json()
    assert entry["sha256"] == sha(data)
    assert Path(entry["path"]).read_bytes() == data


def test_concurrent_downloads_leave_a_valid_catalog(home: Path, hub: FakeHub) -> None:
    hub.chunk_delay = 0.02  # long enough that the three runs overlap
    env = pool_env(home, hub.url, HF_HUB_DISABLE_PROGRESS_BARS="1")
    refs = [f"{REPO}:tiny-f32.gguf", f"{REPO}:tiny-q8_0.gguf", f"{REPO}:tiny-f32.gguf"]
    procs = [start_pool(["models", "download", ref, "--json"], env) for ref in refs]
    for p in procs:
        _, err = p.communicate(timeout=90)
        assert p.returncode == 0, err
    catalog = json.loads((home / "catalog.json").read_text())
    assert sorted(catalog["models"]) == ["tiny-f32", "tiny-q8_0"]
    for name, entry in (("tiny-f32.gguf", "tiny-f32"), ("tiny-q8_0.gguf", "tiny-q8_0")):
        assert catalog["models"][entry]["sha256"] == sha(hub.repos[REPO][name])
    # The two runs for the same file took turns: one transfer, not two.
    assert len(hub.gets("tiny-f32.gguf")) == 1
    assert run_pool(["models", "verify"], env).code == 0


def test_an_id_taken_by_another_file_needs_force(
    cli_env: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    assert call(["models", "download", f"{REPO}:tiny-f32.gguf", "--id", "m"], capsys).code == 0
    r = call(["models", "download", f"{REPO}:tiny-q8_0.gguf", "--id", "m"], capsys)
    assert r.code == 7 and "--force" in r.err
    assert hub.gets("tiny-q8_0.gguf") == []  # refused before any transfer
    r = call(
        ["models", "download", f"{REPO}:tiny-q8_0.gguf", "--id", "m", "--force", "--json"], capsys
    )
    assert r.code == 0
    assert r.json()["filename"] == "tiny-q8_0.gguf"


def test_downloading_again_transfers_nothing(
    cli_env: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    first = call(["models", "download", f"{REPO}:tiny-f32.gguf", "--json"], capsys)
    assert first.code == 0, first.err
    again = call(["models", "download", f"{REPO}:tiny-f32.gguf", "--json"], capsys)
    assert again.code == 0, again.err
    assert again.json() == first.json()
    assert len(hub.gets("tiny-f32.gguf")) == 1


def test_offline_mode_is_a_clear_error(home: Path, hub: FakeHub) -> None:
    r = run_pool(
        ["models", "download", f"{REPO}:tiny-f32.gguf"],
        pool_env(home, hub.url, HF_HUB_OFFLINE="1"),
    )
    assert r.code == 5
    assert r.err.splitlines()[-1] == (
        f"llorch-pool: error: cannot fetch {REPO}: HF_HUB_OFFLINE is set; unset HF_HUB_OFFLINE"
    )
    assert hub.requests == []
