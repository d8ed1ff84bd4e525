"""catalog.json under concurrent writers: every entry survives, the file always parses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import filelock
import pytest

from pool_ctl import backends, catalog, jsonfile, models
from pool_ctl.gguf_meta import read_info
from pool_ctl.hub import Hub
from pool_ctl.models import import_file
from pool_ctl.records import Records
from pool_ctl.settings import Settings
from tests.pool_ctl.conftest import REPO
from tests.pool_ctl.helpers import call, worker_record
from tests.pool_ctl.hubserver import FakeHub
from tests.pool_ctl.test_backends import LINUX

WRITER = """
import sys
from pathlib import Path
from pool_ctl.catalog import Catalog
catalog = Catalog(Path(sys.argv[1]))
for i in range(int(sys.argv[3])):
    with catalog.edit() as models:
        models[f"{sys.argv[2]}-{i}"] = {"id": f"{sys.argv[2]}-{i}", "sha256": "0" * 64}
"""


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """POOL-012: writers holding the catalog lock across read, modify and write lose no entry;
    POOL-006: no temporary file is left behind."""
    path = tmp_path / "catalog.json"
    n, writers = 30, 4
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), f"w{w}", str(n)])
        for w in range(writers)
    ]
    for p in procs:
        assert p.wait(timeout=60) == 0
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert len(data["models"]) == n * writers
    leftovers = [
        p.name for p in tmp_path.iterdir() if p.name not in ("catalog.json", "catalog.json.lock")
    ]
    assert leftovers == []  # no temporary files left behind


def test_a_write_that_fails_half_way_leaves_the_old_file(tmp_path: Path) -> None:
    """POOL-006: the new content goes to a temporary file first; a write that breaks off leaves
    the old file whole and no temporary behind."""
    path = tmp_path / "catalog.json"
    jsonfile.write_atomic(path, {"version": 1, "models": {}})
    with pytest.raises(TypeError):  # json.dump has written part of the document by then
        jsonfile.write_atomic(path, {"version": 1, "models": {"a": {"x": 1}, "b": object()}})
    assert json.loads(path.read_text()) == {"version": 1, "models": {}}
    assert [p.name for p in tmp_path.iterdir()] == ["catalog.json"]


def test_state_files_are_renamed_from_a_synced_temporary_in_their_directory(
    tmp_path: Path, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """POOL-006: catalog.json, backends.json and worker records are each written to a temporary
    file in the same directory, fsynced, then os.replace'd over the old file."""
    events: list[tuple[str, str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"), ""))
        real_fsync(fd)

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    layout = Settings.build(tmp_path / "home").layout
    import_file(Settings.build(tmp_path / "home"), tiny_model, model_id="tiny")
    backends.detect_and_save(layout.backends, LINUX)
    record = worker_record(1, 1, ["x"], model="tiny", model_path=str(tiny_model), token="secret")
    Records(layout).save(record)
    for target in (layout.catalog, layout.backends, layout.worker_record("w1")):
        renames = [i for i, e in enumerate(events) if e[0] == "replace" and e[2] == str(target)]
        assert len(renames) == 1, (target, events)
        src = Path(events[renames[0]][1])
        assert src.parent == target.parent and src != target
        assert ("fsync", str(src), "") in events[: renames[0]], (target, events)
        assert not src.exists() and json.loads(target.read_text())


def _lock_is_free(path: Path) -> bool:
    probe = filelock.FileLock(str(path), timeout=0)
    try:
        probe.acquire()
    except filelock.Timeout:
        return False
    probe.release()
    return True


def test_slow_work_runs_outside_the_catalog_lock(
    cli_env: Path,
    hub: FakeHub,
    tiny_model: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POOL-012: the transfer, the sha256 and the GGUF parsing run while catalog.json.lock is
    free; only the read-modify-write of the catalog holds it."""
    lock = cli_env / "catalog.json.lock"
    seen: list[tuple[str, bool]] = []

    def watch(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            seen.append((name, _lock_is_free(lock)))
            return fn(*args, **kwargs)

        return watched

    monkeypatch.setattr(Hub, "download", watch("transfer", Hub.download))
    monkeypatch.setattr(models, "sha256_file", watch("sha256", models.sha256_file))
    monkeypatch.setattr(models, "read_info", watch("gguf", read_info))
    monkeypatch.setattr(jsonfile, "write_atomic", watch("write", jsonfile.write_atomic))
    r = call(["models", "download", f"{REPO}:tiny-f32.gguf"], capsys)
    assert r.code == 0, r.err
    r = call(["models", "import", str(tiny_model), "--id", "local"], capsys)
    assert r.code == 0, r.err
    assert {name for name, _ in seen} == {"transfer", "sha256", "gguf", "write"}
    assert [free for name, free in seen if name == "write"] == [False, False]  # held to write
    assert all(free for name, free in seen if name != "write"), seen


def test_a_catalog_lock_held_too_long_is_a_conflict(
    tmp_path: Path,
    tiny_model: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """POOL-012: waiting longer than the lock timeout (60 s; a fraction of a second here) for
    another run's catalog lock is exit 7, and nothing is written."""
    assert catalog.LOCK_TIMEOUT_S == 60.0
    monkeypatch.setattr(catalog, "LOCK_TIMEOUT_S", 0.2)
    home = tmp_path / "home"
    home.mkdir()
    other_run = filelock.FileLock(str(home / "catalog.json.lock"))
    with other_run:
        r = call(["--home", str(home), "models", "import", str(tiny_model)], capsys)
    assert r.code == 7, r.err
    assert "catalog lock" in r.err and "still held" in r.err and r.err.count("\n") == 1
    assert not (home / "catalog.json").exists()
    assert call(["--home", str(home), "models", "import", str(tiny_model)], capsys).code == 0
