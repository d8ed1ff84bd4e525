"""The pure decisions `worker cleanup` and `worker list` make for each record."""

from __future__ import annotations

from typing import Any

import pytest

from pool_ctl import procs
from pool_ctl.records import WorkerRecord
from pool_ctl.workers import Live, cleanup_action

GRACE = 60.0
T0 = 1000.0  # the worker's start


@pytest.mark.parametrize(
    "identity, status, since, now, expected",
    [
        ("gone", None, None, T0 + 5, ("remove-gone", None)),
        ("reused", "ready", None, T0 + 5, ("remove-reused", None)),
        ("ours", "ready", None, T0 + 5, ("keep", None)),
        ("ours", "ready", T0 + 1, T0 + 500, ("keep", None)),  # recovered: clock cleared
        ("ours", "draining", None, T0 + 5, ("keep", None)),
        # Loading counts from the start: a load that outlasts the grace period is stuck.
        ("ours", "loading", None, T0 + 30, ("mark-unhealthy", T0)),
        ("ours", "loading", None, T0 + 61, ("stop-unhealthy", T0)),
        # No answer or failed: counted from the first cleanup that saw it.
        ("ours", None, None, T0 + 500, ("mark-unhealthy", T0 + 500)),
        ("ours", None, T0 + 500, T0 + 530, ("mark-unhealthy", T0 + 500)),
        ("ours", "failed", T0 + 500, T0 + 560, ("stop-unhealthy", T0 + 500)),
    ],
)
def test_cleanup_action(
    identity: str,
    status: str | None,
    since: float | None,
    now: float,
    expected: tuple[str, float | None],
) -> None:
    """POOL-070: gone and reused records are removed; ready or draining is kept (clock cleared);
    loading counts from the start, failed or silent from the first cleanup that saw it; past the
    grace period the worker is stopped, before it the record is marked."""
    assert cleanup_action(identity, status, since, T0, now, GRACE) == expected  # type: ignore[arg-type]


def test_zero_grace_stops_at_once() -> None:
    """POOL-070: unhealthy for at least --grace seconds is stopped."""
    assert cleanup_action("ours", None, None, T0, T0 + 1, 0.0) == ("stop-unhealthy", T0 + 1)


@pytest.mark.parametrize(
    "identity, health, state",
    [
        ("ours", {"status": "loading"}, "loading"),
        ("ours", {"status": "ready", "slots_total": 1}, "ready"),
        ("ours", {"status": "draining"}, "draining"),
        ("ours", {"status": "failed"}, "failed"),
        ("ours", None, "unreachable"),  # ours, but no valid /health answer in time
        ("gone", None, "exited"),
        ("reused", None, "pid-reused"),
    ],
)
def test_the_state_worker_list_shows(
    identity: procs.Identity, health: dict[str, Any] | None, state: str
) -> None:
    """POOL-055: the state is the worker's /health status while ours; unreachable when ours but
    silent; exited when gone; pid-reused when reused."""
    record: WorkerRecord = {"worker_id": "w1"}  # type: ignore[typeddict-item]
    assert Live(record, identity, health).state == state
