"""catalog.json: the models this host holds, edited under a file lock and written atomically.

Readers take no lock (every write is one rename); writers hold `catalog.json.lock` for the whole
read-modify-write, so two `llorch-pool` runs at once never lose each other's entries.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal, TypedDict

import filelock

from pool_ctl import jsonfile
from pool_ctl.errors import Conflict, IntegrityError, NotFound

FORMAT_VERSION = 1
LOCK_TIMEOUT_S = 60.0


class ModelEntry(TypedDict):
    id: str
    path: str
    size_bytes: int
    sha256: str
    source: Literal["hf", "import"]
    repo: str | None
    filename: str
    revision: str | None
    name: str | None
    architecture: str | None
    context_length: int | None
    parameter_count: int | None
    quantization: str | None
    chat_template: str
    chat_family: str | None
    added_at: str


class Catalog:
    """The catalog file of one home directory."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = filelock.FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT_S)

    def load(self) -> dict[str, ModelEntry]:
        try:
            data = jsonfile.read(self.path)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise IntegrityError(
                f"catalog {self.path} is not valid JSON ({e})",
                "restore it from a backup or delete it and re-import the models",
            ) from e
        if data is None:
            return {}
        if not isinstance(data, dict) or not isinstance(data.get("models"), dict):
            raise IntegrityError(
                f"catalog {self.path} has no 'models' object",
                "restore it from a backup or delete it and re-import the models",
            )
        models: dict[str, ModelEntry] = data["models"]
        return models

    def get(self, model_id: str) -> ModelEntry:
        models = self.load()
        if model_id not in models:
            known = ", ".join(sorted(models)) or "none"
            raise NotFound(
                f"model {model_id!r} is not in the catalog (known: {known})",
                "run 'llorch-pool models list' or 'llorch-pool models download REF'",
            )
        return models[model_id]

    @contextlib.contextmanager
    def edit(self) -> Iterator[dict[str, ModelEntry]]:
        """Yield the models to change in place; they are written back when the block ends."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire()
        except filelock.Timeout as e:
            raise Conflict(
                f"catalog lock {self._lock.lock_file} still held after {LOCK_TIMEOUT_S:.0f}s",
                "another llorch-pool run is editing the catalog; retry when it ends",
            ) from e
        try:
            models = self.load()
            yield models
            jsonfile.write_atomic(self.path, {"version": FORMAT_VERSION, "models": models})
        finally:
            self._lock.release()
