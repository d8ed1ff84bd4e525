"""The settings of llorch-pool: one frozen value built once from flags and the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = Path("~/.local/share/llorch")


@dataclass(frozen=True)
class Settings:
    """Where the pool keeps its state, and how it reaches the Hugging Face hub.

    Building one does no I/O; `Layout` names the files, the commands create them when needed.
    """

    home: Path
    hf_endpoint: str | None = None
    hf_token: str | None = None
    debug: bool = False

    @classmethod
    def build(
        cls, home: Path | None, *, debug: bool = False, env: dict[str, str] | None = None
    ) -> Settings:
        env = dict(os.environ) if env is None else env
        resolved = (home or DEFAULT_HOME).expanduser()
        return cls(
            home=resolved,
            # huggingface_hub reads HF_ENDPOINT once at import; passing it explicitly keeps one
            # process able to use several homes and endpoints (tests do).
            hf_endpoint=(env.get("HF_ENDPOINT") or "").rstrip("/") or None,
            hf_token=env.get("HF_TOKEN") or None,
            debug=debug,
        )

    @property
    def layout(self) -> Layout:
        return Layout(self.home)


@dataclass(frozen=True)
class Layout:
    """The home: models/, catalog.json, backends.json, workers/<id>.json, logs/<id>.log."""

    home: Path

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def catalog(self) -> Path:
        return self.home / "catalog.json"

    @property
    def backends(self) -> Path:
        return self.home / "backends.json"

    @property
    def workers(self) -> Path:
        return self.home / "workers"

    @property
    def logs(self) -> Path:
        return self.home / "logs"

    @property
    def locks(self) -> Path:
        return self.home / "locks"

    def worker_record(self, worker_id: str) -> Path:
        return self.workers / f"{worker_id}.json"

    def worker_log(self, worker_id: str) -> Path:
        return self.logs / f"{worker_id}.log"
