"""orchestratord's settings: one frozen dataclass, built from flags and `ORCHD_` env vars.

Building and validating do no I/O; the state directory and database are created at startup.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from shared.auth import is_loopback

QueueFullPolicy = Literal["reject", "drop-lru"]
ENV_PREFIX = "ORCHD_"


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
    retry_attempts: int = 2
    heartbeat_stale_ms: int = 6_000
    heartbeat_dead_ms: int = 30_000
    retain_tasks: int = 1_000
    retain_events_bytes: int = 64 * 1024 * 1024
    default_deadline_ms: int = 0
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 60.0
    disconnect_grace_ms: int = 10_000
    stream_coalesce_ms: float = 4.0
    worker_prefetch: int = 0
    policy_budget_ms: float = 50.0
    events_buffer: int = 256
    log_level: str = "info"

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise SettingsError(f"--port must be 1-65535, got {self.port}")
        if self.events_buffer < 2:
            raise SettingsError("--events-buffer must be at least 2")
        if self.queue_capacity < 1:
            raise SettingsError("--queue-capacity must be at least 1")
        if self.queue_full_policy not in ("reject", "drop-lru"):
            raise SettingsError("--queue-full-policy must be 'reject' or 'drop-lru'")
        if self.retry_attempts < 0:
            raise SettingsError("--retry-attempts must be 0 or more")
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
    def key_tenants(self) -> dict[str, str | None]:
        """Bearer secret -> tenant. `--api-key TENANT:KEY` names a tenant; a bare KEY has none."""
        out: dict[str, str | None] = {}
        for k in self.api_keys:
            tenant, sep, secret = k.partition(":")
            out[secret if sep else k] = tenant if sep else None
        return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="orchestratord",
        description="llorch's orchestrator: task API, worker registry, policy-driven dispatch. "
        f"Every flag may also be set as an env var {ENV_PREFIX}<FLAG> (e.g. ORCHD_PORT).",
    )
    d = Settings.__dataclass_fields__
    a = p.add_argument
    a("--host", default=d["host"].default, help="address to listen on")
    a("--port", type=int, default=d["port"].default, help="port to listen on")
    a("--state-dir", type=Path, default=None, help="where the default SQLite file lives")
    a("--db-url", default=None, help="SQLAlchemy URL (default: SQLite in --state-dir, WAL)")
    a("--policy", type=Path, default=None, help="Starlark policy file (default: built-in)")
    a(
        "--fleet",
        type=Path,
        default=None,
        help="desired state of the fleet, TOML or .json (specs/fleet.md); re-read on SIGHUP",
    )
    a(
        "--api-key",
        action="append",
        default=None,
        dest="api_keys",
        help="client bearer key, KEY or TENANT:KEY; repeatable (none: client API is open); "
        "env ORCHD_API_KEY takes a comma-separated list",
    )
    a("--cluster-token", default=None, help="bearer token workers present (none: open)")
    a(
        "--admin-token",
        default=None,
        help="bearer token of admin routes (policy); none: admin routes are refused unless "
        "nothing else is configured either",
    )
    a(
        "--expect-model",
        action="append",
        default=None,
        dest="expect_models",
        help="a model to queue tasks for even while no worker serves it (repeatable; env: "
        "comma-separated); other unserved models are refused at once with 404",
    )
    a(
        "--retain-finished-s",
        type=float,
        default=d["retain_finished_s"].default,
        help="how long finished task records stay in the database (default 7 days)",
    )
    a("--queue-capacity", type=int, default=d["queue_capacity"].default)
    a(
        "--queue-full-policy",
        choices=["reject", "drop-lru"],
        default="reject",
        help="when full: reject the new task, or drop the oldest queued (batch first)",
    )
    a(
        "--retry-attempts",
        type=int,
        default=d["retry_attempts"].default,
        help="retries on another worker when one fails before the first token",
    )
    a(
        "--heartbeat-stale-ms",
        type=int,
        default=d["heartbeat_stale_ms"].default,
        help="a worker silent this long gets no new work",
    )
    a(
        "--heartbeat-dead-ms",
        type=int,
        default=d["heartbeat_dead_ms"].default,
        help="a worker silent this long is marked dead",
    )
    a(
        "--retain-tasks",
        type=int,
        default=d["retain_tasks"].default,
        help="finished tasks whose events stay in memory for Last-Event-ID resume",
    )
    a(
        "--retain-events-bytes",
        type=int,
        default=d["retain_events_bytes"].default,
        help="at most this much memory (about) for the events of finished tasks; the oldest "
        "go first",
    )
    a(
        "--default-deadline-ms",
        type=int,
        default=d["default_deadline_ms"].default,
        help="start deadline for tasks without deadline_ms (0: wait indefinitely)",
    )
    a(
        "--read-timeout-s",
        type=float,
        default=d["read_timeout_s"].default,
        help="longest silence tolerated from a worker stream",
    )
    a(
        "--disconnect-grace-ms",
        type=int,
        default=d["disconnect_grace_ms"].default,
        help="a running task with no event reader for this long is cancelled",
    )
    a(
        "--stream-coalesce-ms",
        type=float,
        default=d["stream_coalesce_ms"].default,
        help="after the first token, send a stream's tokens in bursts at most this often "
        "(0: one write per event)",
    )
    a(
        "--worker-prefetch",
        type=int,
        default=d["worker_prefetch"].default,
        help="jobs sent to a worker beyond its free slots, to wait in its own queue so a "
        "freed slot starts the next job at once (0: only free slots)",
    )
    a(
        "--events-buffer",
        type=int,
        default=d["events_buffer"].default,
        help="events a GET /v2/events reader may fall behind by before its oldest are dropped",
    )
    a("--log-level", default="info")
    a("--debug", action="store_true", help="show a traceback when start-up fails")
    return p


def from_args(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Parse flags, with `ORCHD_*` env vars as defaults; raises SettingsError or SystemExit."""
    env = os.environ if env is None else env
    parser = build_parser()
    defaults: dict[str, object] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest == "help":
            continue
        flag = action.option_strings[0].lstrip("-").replace("-", "_").upper()
        raw = env.get(ENV_PREFIX + flag)
        if raw is None:
            continue
        if action.dest in ("api_keys", "expect_models"):
            defaults[action.dest] = [k.strip() for k in raw.split(",") if k.strip()]
            continue
        try:
            defaults[action.dest] = action.type(raw) if callable(action.type) else raw
        except ValueError as e:
            raise SettingsError(f"{ENV_PREFIX}{flag}: {e}") from e
    parser.set_defaults(**defaults)
    ns = parser.parse_args(argv)
    kwargs = {k: v for k, v in vars(ns).items() if v is not None and k != "debug"}
    kwargs["api_keys"] = tuple(kwargs.get("api_keys", ()))
    kwargs["expect_models"] = tuple(kwargs.get("expect_models", ()))
    return Settings(**kwargs)
