"""llorch-workerd's settings: built once from flags/env, validated without side effects."""

from __future__ import annotations

import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from shared.auth import is_loopback
from shared.model_id import model_id_from_path
from shared.names import MODEL_NAME, POOL_NAME, WORKER_ID
from worker.types import Backend


class SettingsError(ValueError):
    """A setting is invalid; the message is one line for the operator."""


@dataclass(frozen=True)
class WorkerSettings:
    model: Path
    model_name: str = ""
    backend: Backend = "cpu"
    host: str = "127.0.0.1"
    port: int = 8001
    slots: int = 1
    max_queue: int = 8
    n_ctx: int = 4096
    threads: int | None = None
    prefill_chunk: int = 512
    token: str | None = None
    orchestrator_url: str | None = None
    worker_id: str = field(default_factory=lambda: f"w-{uuid.uuid4().hex[:12]}")
    pool: str = field(default_factory=socket.gethostname)
    advertise_url: str | None = None
    heartbeat_interval: float = 2.0
    kv_block: int = 64  # tokens per block of the cache report (WRK-170)
    cache_ram_mib: int = 256  # host RAM for overwritten sequences' KV state (WRK-174); 0: off

    def __post_init__(self) -> None:
        named = bool(self.model_name)
        if not named:
            object.__setattr__(self, "model_name", model_id_from_path(self.model))
        # The names orchestratord would refuse at registration (WRK-007), refused at start.
        for flag, rule, value in (
            ("--model-name", MODEL_NAME, self.model_name),
            ("--worker-id", WORKER_ID, self.worker_id),
            ("--pool", POOL_NAME, self.pool),
        ):
            problem = rule.problem(value)
            if problem:
                given = "" if named or flag != "--model-name" else " (from the file name)"
                raise SettingsError(f"{flag} {value!r}{given} {problem}")
        if not 1 <= self.slots <= 256:
            raise SettingsError(f"--slots must be between 1 and 256, got {self.slots}")
        if self.max_queue < 0:
            raise SettingsError(f"--max-queue must be >= 0, got {self.max_queue}")
        if not 0 <= self.port <= 65535:
            raise SettingsError(f"--port must be between 0 and 65535, got {self.port}")
        if self.n_ctx < 64:
            raise SettingsError(f"--n-ctx must be at least 64, got {self.n_ctx}")
        if not 1 <= self.prefill_chunk <= 8192:
            raise SettingsError(
                f"--prefill-chunk must be between 1 and 8192, got {self.prefill_chunk}"
            )
        if self.orchestrator_url and not self.token:
            raise SettingsError("--orchestrator-url needs --cluster-token")
        if not self.token and not is_loopback(self.host):
            # Secure by default: an open worker is only ever reachable from this machine.
            raise SettingsError(
                f"--host {self.host} is reachable from other machines: set --cluster-token, "
                "or listen on 127.0.0.1"
            )
        if not 1 <= self.kv_block <= 4096:
            raise SettingsError(f"--kv-block must be between 1 and 4096, got {self.kv_block}")
        if self.cache_ram_mib < 0:
            raise SettingsError(f"--cache-ram-mib must be >= 0, got {self.cache_ram_mib}")
        if self.heartbeat_interval <= 0:
            raise SettingsError("--heartbeat-interval must be positive")

    @property
    def url(self) -> str:
        """Where orchestratord reaches this worker."""
        return self.advertise_url or f"http://{self.host}:{self.port}"
