"""Model operations: download from the hub, import a local file, remove, verify.

Each one ends in one catalog edit under the catalog lock; the slow parts (transfer, sha256,
GGUF parsing) run outside it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import filelock

from pool_ctl import refs
from pool_ctl.catalog import Catalog, ModelEntry
from pool_ctl.errors import Conflict, IntegrityError, InvalidInput
from pool_ctl.gguf_meta import read_info
from pool_ctl.hub import Hub
from pool_ctl.procs import identify
from pool_ctl.records import Records
from pool_ctl.settings import Settings


def sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _entry(
    model_id: str,
    path: Path,
    sha256: str,
    *,
    source: Literal["hf", "import"],
    repo: str | None,
    filename: str,
    revision: str | None,
) -> ModelEntry:
    info = read_info(path)
    return ModelEntry(
        id=model_id,
        path=str(path),
        size_bytes=path.stat().st_size,
        sha256=sha256,
        source=source,
        repo=repo,
        filename=filename,
        revision=revision,
        name=info.name,
        architecture=info.architecture,
        context_length=info.context_length,
        parameter_count=info.parameter_count,
        quantization=info.quantization,
        chat_template=info.chat_template,
        chat_family=info.chat_family,
        added_at=_now(),
    )


def _store(catalog: Catalog, entry: ModelEntry, *, force: bool) -> ModelEntry:
    with catalog.edit() as models:
        old = models.get(entry["id"])
        if old is not None and old["sha256"] != entry["sha256"] and not force:
            raise Conflict(
                f"model id {entry['id']!r} already names another file ({old['path']})",
                "choose another id with --id, or replace it with --force",
            )
        if old is not None and old["sha256"] == entry["sha256"]:
            entry["added_at"] = old["added_at"]
        models[entry["id"]] = entry
    return entry


def download(
    settings: Settings, ref_text: str, *, model_id: str | None = None, force: bool = False
) -> ModelEntry:
    """Resolve REF on the hub, fetch the file into models/, record it in the catalog."""
    ref = refs.parse_ref(ref_text)
    hub = Hub(settings.hf_endpoint, settings.hf_token)
    files = hub.list_files(ref.repo, ref.revision)
    filename = refs.select_file(ref, list(files))
    mid = refs.check_model_id(model_id or refs.default_model_id(filename))
    layout = settings.layout
    old = Catalog(layout.catalog).load().get(mid)
    if old is not None and (old["repo"], old["filename"]) != (ref.repo, filename) and not force:
        # Refuse before a transfer of gigabytes, not after; _store checks again under the lock.
        raise Conflict(
            f"model id {mid!r} already names another file ({old['path']})",
            "choose another id with --id, or replace it with --force",
        )
    local_dir = layout.models / ref.repo.replace("/", "__")
    layout.locks.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(f"{ref.repo}\0{filename}".encode()).hexdigest()[:16]
    # Two runs fetching the same file take turns; the second finds it in place and does not
    # transfer it again.
    with filelock.FileLock(str(layout.locks / f"download-{key}.lock")):
        got = hub.download(ref.repo, filename, ref.revision, local_dir)
        digest = sha256_file(got.path)
        expected = got.sha256 or files[filename].sha256
        if expected is not None and digest != expected:
            got.path.unlink(missing_ok=True)
            raise IntegrityError(
                f"{ref.repo}:{filename} downloaded with sha256 {digest}, the hub says {expected}",
                "the file was removed; run the same command again",
            )
        entry = _entry(
            mid,
            got.path,
            digest,
            source="hf",
            repo=ref.repo,
            filename=filename,
            revision=got.commit or ref.revision,
        )
    return _store(Catalog(layout.catalog), entry, force=force)


def import_file(
    settings: Settings,
    path: Path,
    *,
    model_id: str | None = None,
    copy: bool = False,
    force: bool = False,
) -> ModelEntry:
    """Add a local GGUF to the catalog, in place or (with copy) copied under models/."""
    src = path.expanduser().resolve()
    if not src.is_file():
        raise InvalidInput(f"{path} is not a file", "give the path of a .gguf file")
    read_info(src)  # refuse a non-GGUF before copying gigabytes
    mid = refs.check_model_id(model_id or refs.default_model_id(src.name))
    target = src
    if copy:
        dest_dir = settings.layout.models / "imported"
        dest_dir.mkdir(parents=True, exist_ok=True)
        target = dest_dir / src.name
        tmp = dest_dir / f".{src.name}.{os.getpid()}.tmp"
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)
    digest = sha256_file(target)
    entry = _entry(
        mid, target, digest, source="import", repo=None, filename=src.name, revision=None
    )
    return _store(Catalog(settings.layout.catalog), entry, force=force)


@dataclass(frozen=True)
class Removal:
    entry: ModelEntry
    deleted_file: bool


def remove(settings: Settings, model_id: str, *, force: bool = False) -> Removal:
    """Drop a model from the catalog; delete its file only when it lives under models/."""
    layout = settings.layout
    catalog = Catalog(layout.catalog)
    catalog.get(model_id)  # NotFound before anything else
    users = [
        r["worker_id"]
        for r in Records(layout).all()
        if r["model"] == model_id and identify(r["pid"], r["start_time"], r["cmdline"]) == "ours"
    ]
    if users and not force:
        raise Conflict(
            f"model {model_id!r} is in use by worker(s) {', '.join(users)}",
            "stop them first ('llorch-pool worker stop ID') or pass --force",
        )
    with catalog.edit() as models:
        entry = models.pop(model_id)
    path = Path(entry["path"])
    models_dir = layout.models.resolve()
    deleted = False
    if path.resolve().is_relative_to(models_dir) and path.exists():
        path.unlink()
        deleted = True
    return Removal(entry, deleted)


@dataclass(frozen=True)
class Check:
    id: str
    ok: bool
    problem: str | None


def verify(settings: Settings, model_id: str | None = None) -> list[Check]:
    """Check each model's file: present, same size, same sha256, readable GGUF."""
    catalog = Catalog(settings.layout.catalog)
    entries = [catalog.get(model_id)] if model_id else list(catalog.load().values())
    return [_check(e) for e in sorted(entries, key=lambda e: e["id"])]


def _check(entry: ModelEntry) -> Check:
    path = Path(entry["path"])
    if not path.is_file():
        return Check(entry["id"], False, f"file {path} is missing")
    size = path.stat().st_size
    if size != entry["size_bytes"]:
        return Check(entry["id"], False, f"size {size} differs from {entry['size_bytes']}")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        return Check(entry["id"], False, f"sha256 {digest} differs from {entry['sha256']}")
    try:
        read_info(path)
    except IntegrityError as e:
        return Check(entry["id"], False, e.message)
    return Check(entry["id"], True, None)
