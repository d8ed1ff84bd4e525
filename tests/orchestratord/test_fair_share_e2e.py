"""Fair share of the queue across tenants, end to end (issue 22, item 3): a real orchestratord
with three tenants' keys and a real 1-slot worker on the tiny model. The order is read from
orchestratord's own `queue_position` while a task holds the only slot, then checked against
the order the tasks started in: no timing is asserted."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.orchestratord.cluster import MODEL, orchestratord, wait_for, worker

pytestmark = pytest.mark.e2e
KEYS = {"A": "key-a", "B": "key-b", "C": "key-c"}
HOLD = {"model": MODEL, "prompt": "hold", "max_tokens": 16000, "ignore_eos": True}
# max_tokens 3 at weight 3 costs A one unit a task, so the fair order has no float ties.
SHORT = {"model": MODEL, "prompt": "hi", "max_tokens": 3, "ignore_eos": True, "priority": "batch"}


def headers(tenant: str) -> dict[str, str]:
    return {"authorization": f"Bearer {KEYS[tenant]}"}


def submit(url: str, tenant: str, body: dict[str, Any]) -> tuple[str, int]:
    r = httpx.post(url + "/v2/tasks", json=body, headers=headers(tenant), timeout=10)
    assert r.status_code == 202, r.text
    return r.json()["task_id"], r.json()["queue_position"]


def record(url: str, tenant: str, task_id: str) -> dict[str, Any]:
    r = httpx.get(f"{url}/v2/tasks/{task_id}", headers=headers(tenant), timeout=10)
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize("discipline", ["wfq", "fifo"])
def test_orch_350_352_another_tenants_backlog_does_not_hold_b_back(
    discipline: str, tiny_model: Path, tmp_path: Path
) -> None:
    """ORCH-350, ORCH-352: while C's task holds the only slot, A queues 12 tasks, then B 4.
    Fair share (A weighted 3): B's first task is second in line and B gets every fourth turn;
    A's and B's own tasks keep their order; the tasks then start in exactly that order.
    First come, first served (`--queue-discipline fifo`): B's first task is behind all 12."""
    args = [f"--api-key={t}:{k}" for t, k in KEYS.items()]
    args += ["--tenant-weight", "A=3", "--queue-discipline", discipline]
    with (
        orchestratord(tmp_path, *args) as orch,
        worker(tiny_model, tmp_path, orch.url, "w1", slots=1),
    ):
        url = orch.url
        hold, _ = submit(url, "C", HOLD)
        wait_for(lambda: record(url, "C", hold)["status"] == "running", what="the slot held")
        tasks = [("A", submit(url, "A", SHORT)[0]) for _ in range(12)]
        b_first, b_position = submit(url, "B", SHORT)
        tasks += [("B", b_first)] + [("B", submit(url, "B", SHORT)[0]) for _ in range(3)]
        by_position = sorted(tasks, key=lambda t: record(url, t[0], t[1])["queue_position"])
        line = "".join(tenant for tenant, _ in by_position)
        if discipline == "wfq":
            assert b_position == 1
            assert line == "ABAAABAAABAAABAA"
        else:
            assert b_position == 12
            assert line == "A" * 12 + "B" * 4
        for tenant in "AB":  # each tenant's own tasks in the order it queued them
            assert [t for t in by_position if t[0] == tenant] == [
                t for t in tasks if t[0] == tenant
            ]
        r = httpx.post(f"{url}/v2/tasks/{hold}/cancel", headers=headers("C"), timeout=10)
        assert r.status_code == 204

        def finished() -> list[dict[str, Any]] | None:
            recs = [record(url, tenant, task_id) for tenant, task_id in by_position]
            return recs if all(x["status"] == "succeeded" for x in recs) else None

        done = wait_for(finished, timeout=60, what="every task to finish")
        started = [x["started_ms"] for x in done]
        assert started == sorted(started)  # one slot: they started in the queue's order
