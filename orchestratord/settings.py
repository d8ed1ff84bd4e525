"""orchestratord's settings: one frozen dataclass, built from flags and `LLORCH_` env vars
(orchestratord/cli.py derives one option per field).

Building and validating do no I/O; the state directory and database are created at startup.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared.auth import is_loopback
from shared.names import MODEL_NAME

QueueFullPolicy = Literal["reject", "drop-lru"]
QueueDiscipline = Literal["fifo", "wfq"]
LogFormat = Literal["text", "json"]
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """A bad flag or env value; the CLI prints it as one line."""


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "llorch" / "orchestratord"


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    state_dir: Path = field(default_factory=default_state_dir)
    db_url: str | None = None
    policy: Path | None = None
    fleet: Path | None = None
    api_keys: tuple[str, ...] = ()
    cluster_token: str | None = None
    admin_token: str | None = None
    expect_models: tuple[str, ...] = ()
    retain_finished_s: float = 7 * 24 * 3600.0
    queue_capacity: int = 1024
    queue_full_policy: QueueFullPolicy = "reject"
    queue_discipline: QueueDiscipline = "wfq"
    tenant_weights: tuple[str, ...] = ()  # TENANT=W (ORCH-352)
    retry_attempts: int = 2
    failover_max: int = 2  # ORCH-384: times one task may move on after a token (0: never)
    failover_warm_every: int = 0  # ORCH-386: tokens between prefills on a standby (0: off)
    heartbeat_stale_ms: int = 6_000
    heartbeat_dead_ms: int = 30_000
    retain_tasks: int = 1_000
    retain_events_bytes: int = 64 * 1024 * 1024
    default_deadline_ms: int = 0
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 60.0
    disconnect_grace_ms: int = 10_000
    model_grace_ms: int = 60_000
    stream_coalesce_ms: float = 4.0
    worker_prefetch: int = 0
    cache_index_entries: int = 500_000
    policy_budget_ms: float = 50.0
    policy_pass_budget_ms: float = 200.0
    policy_breaker_failures: int = 5
    policy_breaker_cooldown_s: float = 30.0
    events_buffer: int = 256
    limits_window_s: float = 60.0
    usage_flush_s: float = 5.0
    metrics_tenant_labels: int = 100
    log_level: str = "info"
    log_format: LogFormat = "text"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise SettingsError(f"--port must be 1-65535, got {self.port}")
        if self.log_level not in LOG_LEVELS:
            raise SettingsError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        if self.log_format not in ("text", "json"):
            raise SettingsError("--log-format must be 'text' or 'json'")
        if not 0 < self.policy_budget_ms <= self.policy_pass_budget_ms:
            raise SettingsError("need 0 < --policy-budget-ms <= --policy-pass-budget-ms")
        if self.policy_breaker_failures < 1 or self.policy_breaker_cooldown_s < 0:
            raise SettingsError(
                "--policy-breaker-failures must be at least 1, --policy-breaker-cooldown-s >= 0"
            )
        if not 0 < self.limits_window_s <= 3600 or not 0 < self.usage_flush_s <= 3600:
            raise SettingsError("--limits-window-s and --usage-flush-s must be in (0, 3600]")
        if self.metrics_tenant_labels < 0:
            raise SettingsError("--metrics-tenant-labels must be 0 or more")
        if self.cache_index_entries < 1:
            raise SettingsError("--cache-index-entries must be at least 1")
        if self.events_buffer < 2:
            raise SettingsError("--events-buffer must be at least 2")
        if self.queue_capacity < 1:
            raise SettingsError("--queue-capacity must be at least 1")
        if self.queue_full_policy not in ("reject", "drop-lru"):
            raise SettingsError("--queue-full-policy must be 'reject' or 'drop-lru'")
        if self.queue_discipline not in ("fifo", "wfq"):
            raise SettingsError("--queue-discipline must be 'fifo' or 'wfq'")
        _ = self.tenant_weight_map  # raises on a bad --tenant-weight
        if self.retry_attempts < 0:
            raise SettingsError("--retry-attempts must be 0 or more")
        if not 0 <= self.failover_max <= 100:
            raise SettingsError("--failover-max must be between 0 and 100")
        if not 0 <= self.failover_warm_every <= 32768:
            raise SettingsError("--failover-warm-every must be between 0 and 32768")
        if not 0 < self.heartbeat_stale_ms < self.heartbeat_dead_ms:
            raise SettingsError("need 0 < --heartbeat-stale-ms < --heartbeat-dead-ms")
        if self.retain_finished_s <= 0:
            raise SettingsError("--retain-finished-s must be greater than 0")
        if self.retain_events_bytes < 0:
            raise SettingsError("--retain-events-bytes must be 0 or more")
        if self.retain_tasks < 1:
            raise SettingsError("--retain-tasks must be at least 1")
        if not 0 <= self.worker_prefetch <= 64:
            raise SettingsError("--worker-prefetch must be between 0 and 64")
        if not 0 <= self.stream_coalesce_ms <= 1000:
            raise SettingsError("--stream-coalesce-ms must be between 0 and 1000")
        if self.default_deadline_ms < 0 or self.disconnect_grace_ms < 0:
            raise SettingsError("--default-deadline-ms and --disconnect-grace-ms must be >= 0")
        for model in self.expect_models:
            problem = MODEL_NAME.problem(model)
            if problem:  # the name tasks would be refused for (ORCH-045)
                raise SettingsError(f"--expect-model {model!r} {problem}")
        if self.model_grace_ms < 0:
            raise SettingsError("--model-grace-ms must be >= 0")
        if any(not k or (":" in k and not k.split(":", 1)[1]) for k in self.api_keys):
            raise SettingsError("--api-key must be KEY or TENANT:KEY with a non-empty KEY")
        if not is_loopback(self.host) and not (self.api_keys and self.cluster_token):
            # Secure by default: open endpoints are only ever reachable from this machine.
            raise SettingsError(
                f"--host {self.host} is reachable from other machines: set --api-key and "
                "--cluster-token, or listen on 127.0.0.1"
            )

    @property
    def database_url(self) -> str:
        if self.db_url:
            return self.db_url
        return f"sqlite:///{self.state_dir / 'orchestratord.sqlite3'}"

    @property
    def tenant_weight_map(self) -> dict[str, float]:
        """`--tenant-weight TENANT=W` as {tenant: W}; raises SettingsError on a bad one."""
        out: dict[str, float] = {}
        for item in self.tenant_weights:
            tenant, sep, raw = item.partition("=")
            try:
                weight = float(raw)
            except ValueError:
                weight = math.nan
            if not sep or not tenant or not 0 < weight < 1e6:
                raise SettingsError(
                    f"--tenant-weight {item!r}: want TENANT=W with W a number above 0 "
                    "(and below 1e6)"
                )
            out[tenant] = weight
        return out

    @property
    def key_tenants(self) -> dict[str, str | None]:
        """Bearer secret -> tenant. `--api-key TENANT:KEY` names a tenant; a bare KEY has none."""
        out: dict[str, str | None] = {}
        for k in self.api_keys:
            tenant, sep, secret = k.partition(":")
            out[secret if sep else k] = tenant if sep else None
        return out
