"""The pure decision `worker cleanup` makes for each record."""

from __future__ import annotations

import pytest

from pool_ctl.workers import cleanup_action

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
    assert cleanup_action(identity, status, since, T0, now, GRACE) == expected  # type: ignore[arg-type]


def test_zero_grace_stops_at_once() -> None:
    assert cleanup_action("ours", None, None, T0, T0 + 1, 0.0) == ("stop-unhealthy", T0 + 1)
