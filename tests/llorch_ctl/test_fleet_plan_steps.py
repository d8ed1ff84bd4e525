"""`llorch fleet apply`: each action as the precise pool command, dry run, leased actions
(specs/fleet.md FLT-040..FLT-043). The end-to-end run is tests/llorch_ctl/test_fleet_e2e.py."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from llorch_ctl.fleet import FleetApi, apply_plan, source_argv, spawn_argv


def action(kind: str, **over: Any) -> dict[str, Any]:
    a: dict[str, Any] = {
        "id": f"{kind}:m.b.0",
        "kind": kind,
        "model": "m",
        "pool": "b",
        "worker_id": "m.b.0",
        "source": None,
        "backend": "cpu",
        "slots": 2,
        "ctx": 0,
        "after": None,
        "reason": "scale m from 1 to 2 replicas: load",
        "lease": None,
    }
    a.update(over)
    return a


def test_flt_040_spawn_is_the_pool_command_an_operator_types() -> None:
    """FLT-040: spawn binds the worker to the pool's address and registers it with the
    orchestrator URL apply uses, under the plan's worker id."""
    assert spawn_argv(action("spawn"), "http://orch:8080", "10.0.0.2") == [
        "worker", "spawn", "cpu", "--model", "m", "--slots", "2", "--worker-id", "m.b.0",
        "--host", "10.0.0.2", "--orchestrator-url", "http://orch:8080", "--pool", "b", "--json",
    ]  # fmt: skip


def test_flt_040_spawn_passes_the_desired_context_length() -> None:
    """FLT-040, FLT-001: a model's `ctx` reaches the worker as --n-ctx; 0 leaves the worker's
    default."""
    argv = spawn_argv(action("spawn", ctx=8192), "http://orch:8080", "10.0.0.2")
    assert argv[argv.index("--n-ctx") + 1] == "8192"
    assert argv[-3:] == ["--pool", "b", "--json"]
    assert "--n-ctx" not in spawn_argv(action("spawn"), "http://orch:8080", "10.0.0.2")


def test_flt_040_sources_become_download_or_import() -> None:
    """FLT-040, FLT-005: hf: downloads, file: imports, catalog: only looks."""
    assert source_argv(action("ensure_model", source="hf:org/repo:q4_k_m")) == [
        "models", "download", "org/repo:q4_k_m", "--id", "m", "--json",
    ]  # fmt: skip
    assert source_argv(action("ensure_model", source="file:/srv/m.gguf")) == [
        "models", "import", "/srv/m.gguf", "--id", "m", "--json",
    ]  # fmt: skip
    assert source_argv(action("ensure_model", source="catalog:m")) is None


def _no_pool(pool: str, argv: Sequence[str]) -> tuple[int, str, str]:
    raise AssertionError(f"ran {argv} on {pool}")


def test_flt_042_dry_run_prints_and_touches_nothing() -> None:
    """FLT-042: --dry-run prints each action with its reason; no lease, no pool command (the
    API points at a closed port, so any call would fail)."""
    api = FleetApi("http://127.0.0.1:9", None, timeout=0.5)
    lines: list[str] = []
    plan = {"actions": [action("ensure_model", id="ensure_model:m@b", source="catalog:m"),
                        action("spawn", after="ensure_model:m@b")]}  # fmt: skip
    results = apply_plan(
        plan, api, _no_pool, holder="me", orchestrator_url="http://o", bind_host=str,
        dry_run=True, echo=lines.append,
    )  # fmt: skip
    assert [r.outcome for r in results] == ["would", "would"]
    assert lines == [
        "would ensure model m on b: scale m from 1 to 2 replicas: load",
        "would spawn m.b.0 (m) on b: scale m from 1 to 2 replicas: load",
    ]
    api.close()


def test_flt_043_actions_leased_elsewhere_are_skipped() -> None:
    """FLT-043: an action another apply holds (or did) is printed as skipped, not run."""
    api = FleetApi("http://127.0.0.1:9", None, timeout=0.5)
    lines: list[str] = []
    plan = {"actions": [
        action("spawn", lease={"holder": "other:1", "expires_ms": 9, "done": False}),
        action("stop", id="stop:m.b.1", lease={"holder": "other:2", "expires_ms": 9, "done": True}),
    ]}  # fmt: skip
    results = apply_plan(
        plan, api, _no_pool, holder="me", orchestrator_url="http://o", bind_host=str,
        dry_run=False, echo=lines.append,
    )  # fmt: skip
    assert [(r.outcome, r.detail) for r in results] == [
        ("skipped", "in progress by other:1"),
        ("skipped", "done by other:2"),
    ]
    assert lines[0].startswith("skip spawn m.b.0 (m) on b")
    api.close()
