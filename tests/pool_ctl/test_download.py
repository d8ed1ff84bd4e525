"""`models download` through huggingface_hub against a loopback hub (HF_ENDPOINT)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub.utils import _http as hf_http

from tests.pool_ctl.conftest import REPO
from tests.pool_ctl.helpers import call, pool_env, run_pool, start_pool
from tests.pool_ctl.hubserver import COMMIT, FakeHub
from tests.support import free_port

pytestmark = pytest.mark.e2e


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def wait_until(predicate: Callable[[], bool], timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


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
    """POOL-021: a quantization that selects exactly one GGUF downloads it."""
    r = call(["models", "download", f"{REPO}:F32", "--json"], capsys)
    assert r.code == 0, r.err
    assert r.json()["filename"] == "tiny-f32.gguf"


def test_ambiguous_quant_lists_the_choices(
    cli_env: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    """POOL-021: several matches are exit 4 listing the matches; nothing is transferred."""
    r = call(["models", "download", f"{REPO}:q8_0"], capsys)
    assert r.code == 4
    assert r.err.count("\n") == 1 and r.err.startswith("llorch-pool: error: ")
    assert "ambiguous" in r.err
    assert "tiny-q8_0.gguf" in r.err and "tiny-chat-q8_0.gguf" in r.err
    assert not (cli_env / "catalog.json").exists()
    assert [r for r in hub.requests if "/resolve/" in r.path] == []


def test_missing_quant_lists_every_gguf(
    cli_env: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    """POOL-021: no match is exit 4 listing every GGUF of the repository, and only GGUFs."""
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
    """POOL-023: a transfer whose connection breaks resumes with a Range request from the bytes
    already written, not from the start."""
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
    """POOL-025, POOL-012: overlapping runs, two for the same file: one transfer of it, and
    every entry in the catalog."""
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


def test_hub_traffic_is_the_tree_api_and_a_transfer_pinned_to_the_commit(
    home: Path, hub: FakeHub
) -> None:
    """POOL-022: the file list from the tree API (recursive), the metadata from a HEAD on the
    requested revision, the transfer pinned to the commit that HEAD returned, into
    models/<org>__<repo>/; the progress bar on stderr. POOL-004: with --json, stdout holds the
    one JSON document and nothing else."""
    # huggingface_hub shows its bar only on a terminal unless TQDM_POSITION=-1.
    r = run_pool(
        ["models", "download", f"{REPO}:F32", "--json"], pool_env(home, hub.url, TQDM_POSITION="-1")
    )
    assert r.code == 0, r.err
    entry = json.loads(r.out)
    tree, head, *rest = hub.requests
    assert (tree.method, tree.path) == ("GET", f"/api/models/{REPO}/tree/main")
    assert "recursive=true" in tree.query.split("&")
    assert (head.method, head.path) == ("HEAD", f"/{REPO}/resolve/main/tiny-f32.gguf")
    assert [(q.method, q.path) for q in rest if q.method == "GET"] == [
        ("GET", f"/{REPO}/resolve/{COMMIT}/tiny-f32.gguf")
    ]
    assert all(q.path == f"/{REPO}/resolve/{COMMIT}/tiny-f32.gguf" for q in rest), rest
    assert entry["revision"] == COMMIT
    assert Path(entry["path"]) == home / "models" / "llorch__Tiny-GGUF" / "tiny-f32.gguf"
    assert "tiny-f32.gguf" in r.err and "100%" in r.err  # the progress bar


@pytest.mark.parametrize("etag", ["sha256", "git-sha1"])
def test_a_sha256_mismatch_deletes_the_file(
    cli_env: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str], etag: str
) -> None:
    """POOL-024: the computed sha256 is compared with the hub's (the LFS ETag, else the tree's
    LFS oid): a mismatch deletes the file and is exit 9; a match is recorded."""
    name, data = "tiny-f32.gguf", hub.repos[REPO]["tiny-f32.gguf"]
    if etag == "git-sha1":
        hub.sha1_etag.add(name)  # only the tree states the sha256
    hub.claimed_sha256[name] = "ab" * 32
    r = call(["models", "download", f"{REPO}:{name}"], capsys)
    assert r.code == 9, r.err
    assert f"downloaded with sha256 {sha(data)}, the hub says {'ab' * 32}" in r.err
    assert r.err.count("\n") == 1
    assert not (cli_env / "models" / "llorch__Tiny-GGUF" / name).exists()
    assert not (cli_env / "catalog.json").exists()
    hub.claimed_sha256.clear()
    r = call(["models", "download", f"{REPO}:{name}", "--json"], capsys)
    assert r.code == 0, r.err
    assert r.json()["sha256"] == sha(data)


def test_a_downloaded_file_that_is_not_a_gguf_stays_out_of_the_catalog(
    cli_env: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str]
) -> None:
    """POOL-011: a file without the GGUF magic, or one GGUFReader cannot parse, is exit 9 and
    never enters the catalog."""
    hub.repos[REPO]["page-q2_k.gguf"] = b"<html>not a model</html>"
    hub.repos[REPO]["cut-q3_k.gguf"] = hub.repos[REPO]["tiny-f32.gguf"][:2000]
    r = call(["models", "download", f"{REPO}:q2_k"], capsys)
    assert r.code == 9 and "is not a GGUF file" in r.err, r.err
    r = call(["models", "download", f"{REPO}:q3_k"], capsys)
    assert r.code == 9 and "truncated or corrupt" in r.err, r.err
    assert not (cli_env / "catalog.json").exists()


def test_hub_failures_are_exit_5_with_their_cause(
    cli_env: Path, hub: FakeHub, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """POOL-026: a missing revision, a file the hub no longer serves, a gated repository, any
    other HTTP status and a network error are each exit 5 with a line that names the cause
    (missing repository, HF_HUB_OFFLINE and 401: the tests above)."""

    def fails(ref: str) -> str:
        r = call(["models", "download", ref], capsys)
        assert r.code == 5, r.err
        line = r.err.splitlines()[-1]
        assert line.startswith("llorch-pool: error: ") and "; " in line
        return line

    ref = f"{REPO}:tiny-f32.gguf"
    assert f"revision 'v9' not found in {REPO}" in fails(f"{REPO}@v9:tiny-f32.gguf")
    hub.missing.add("tiny-f32.gguf")  # listed, but gone by the time it is fetched
    assert f"{REPO}:tiny-f32.gguf not found on the hub" in fails(ref)
    hub.missing.clear()
    hub.gated.add(REPO)
    line = fails(ref)
    assert f"{REPO} is gated" in line and "accept its terms" in line and "HF_TOKEN" in line
    hub.gated.clear()
    hub.fail_with = 418
    assert f"the hub answered HTTP 418 for {REPO}" in fails(ref)
    closed = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", closed)
    # huggingface_hub retries a refused connection 5 times, 1 to 8 s apart: skip the waits.
    monkeypatch.setattr(hf_http, "time", SimpleNamespace(sleep=lambda _s: None))
    line = fails(ref)
    assert f"cannot fetch {REPO} from {closed}: ConnectError" in line and "HF_ENDPOINT" in line
    assert not (cli_env / "catalog.json").exists()


def test_runs_for_one_file_take_turns_while_other_files_proceed(home: Path, hub: FakeHub) -> None:
    """POOL-025: while one run transfers a file, a second run for the same file waits its turn
    and then finds the file instead of transferring it again; a run for another file does not
    wait. Both entries end up in the catalog."""
    held = threading.Event()
    hub.hold["tiny-f32.gguf"] = held
    # The held transfer must not run into huggingface_hub's read timeout (10 s) and retry.
    env = pool_env(home, hub.url, HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DOWNLOAD_TIMEOUT="300")

    def trees() -> int:
        return sum(1 for r in hub.requests if "/tree/" in r.path)

    def heads() -> int:
        return sum(1 for r in hub.requests if r.method == "HEAD" and "tiny-f32" in r.path)

    def download(name: str) -> subprocess.Popen[str]:
        return start_pool(["models", "download", f"{REPO}:{name}", "--json"], env)

    first = download("tiny-f32.gguf")
    try:
        assert wait_until(lambda: len(hub.gets("tiny-f32.gguf")) == 1)  # transferring, held
        asked = heads()
        second = download("tiny-f32.gguf")
        other = download("tiny-q8_0.gguf")
        _, err = other.communicate(timeout=60)
        assert other.returncode == 0, err  # another file went ahead
        assert wait_until(lambda: trees() == 3)  # the second run has listed the repository...
        # ...and waits for its turn: it asks the hub nothing about the file meanwhile.
        assert not wait_until(lambda: heads() > asked, timeout=3.0)
        assert first.poll() is None and second.poll() is None
    finally:
        held.set()  # whatever happened, the held runs can finish
    for p in (first, second):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert len(hub.gets("tiny-f32.gguf")) == 1  # one transfer for the two runs
    catalog = json.loads((home / "catalog.json").read_text())
    assert sorted(catalog["models"]) == ["tiny-f32", "tiny-q8_0"]
    for name, entry in (("tiny-f32.gguf", "tiny-f32"), ("tiny-q8_0.gguf", "tiny-q8_0")):
        assert catalog["models"][entry]["sha256"] == sha(hub.repos[REPO][name])
