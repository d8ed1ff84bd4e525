from __future__ import annotations

from pathlib import Path

import pytest

from orchestratord.cli import from_args as parse
from orchestratord.settings import Settings, SettingsError


def from_args(argv: list[str], env: dict[str, str]) -> Settings:
    s = parse(argv, env)
    assert isinstance(s, Settings)
    return s


def test_flags_and_env(tmp_path: Path) -> None:
    s = from_args(
        [
            "--port",
            "9000",
            "--api-key",
            "k1",
            "--api-key",
            "acme:k2",
            "--queue-full-policy",
            "drop-lru",
        ],
        env={
            "LLORCH_QUEUE_CAPACITY": "7",
            "LLORCH_STATE_DIR": str(tmp_path),
            "LLORCH_CLUSTER_TOKEN": "ct",
        },
    )
    assert (s.port, s.queue_capacity, s.queue_full_policy, s.cluster_token) == (
        9000,
        7,
        "drop-lru",
        "ct",
    )
    assert s.key_tenants == {"k1": None, "k2": "acme"}
    assert s.database_url == f"sqlite:///{tmp_path / 'orchestratord.sqlite3'}"
    # Flags beat env.
    assert (
        from_args(["--queue-capacity", "3"], env={"LLORCH_QUEUE_CAPACITY": "7"}).queue_capacity == 3
    )
    assert from_args([], env={"LLORCH_API_KEYS": "a, b"}).api_keys == ("a", "b")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"port": 0},
        {"queue_capacity": 0},
        {"retry_attempts": -1},
        {"heartbeat_stale_ms": 10, "heartbeat_dead_ms": 5},
        {"api_keys": ("acme:",)},
        {"queue_full_policy": "maybe"},
    ],
)
def test_bad_values_are_one_clear_error(kwargs: dict[str, object]) -> None:
    with pytest.raises(SettingsError):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_bad_env_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="LLORCH_PORT"):
        from_args([], {"LLORCH_PORT": "eighty"})


def test_listening_beyond_loopback_needs_keys_and_a_cluster_token(tmp_path: Path) -> None:
    """ORCH-006: beyond loopback the daemon needs both --api-key and --cluster-token."""
    for host in ("0.0.0.0", "10.1.2.3", "box.example"):
        with pytest.raises(SettingsError, match="reachable from other machines"):
            Settings(host=host, state_dir=tmp_path)
        with pytest.raises(SettingsError, match="reachable from other machines"):
            Settings(host=host, state_dir=tmp_path, api_keys=("k",))
        Settings(host=host, state_dir=tmp_path, api_keys=("k",), cluster_token="t")
    for host in ("127.0.0.1", "::1", "localhost"):
        Settings(host=host, state_dir=tmp_path)
