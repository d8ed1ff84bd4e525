"""Tenants, admin credentials and request limits (issue 8, item 1): ORCH-150..156."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from shared.limits import MAX_BODY_BYTES
from tests.orchestratord.conftest import AppFactory

TASK = {"model": "m", "prompt": "hello", "max_tokens": 4}
ACME = {"authorization": "Bearer k-acme"}
BETA = {"authorization": "Bearer k-beta"}
BARE = {"authorization": "Bearer k-bare"}
ADMIN = {"authorization": "Bearer at"}
CT = {"authorization": "Bearer ct"}
KEYS = ("acme:k-acme", "beta:k-beta", "k-bare")
# Tasks stay queued: these tests need no worker, so the model is declared expected.
SETTINGS: dict[str, Any] = {
    "api_keys": KEYS,
    "cluster_token": "ct",
    "admin_token": "at",
    "expect_models": ("m",),
}


def test_orch_150_another_tenant_gets_404_on_read_events_and_cancel(orchd: AppFactory) -> None:
    with orchd(**SETTINGS) as c:
        task_id = c.post("/v2/tasks", json=TASK, headers=ACME).json()["task_id"]
        for headers in (BETA, BARE):
            r = c.get(f"/v2/tasks/{task_id}", headers=headers)
            assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
            assert c.get(f"/v2/tasks/{task_id}/events", headers=headers).status_code == 404
            assert c.post(f"/v2/tasks/{task_id}/cancel", headers=headers).status_code == 404
        # Nothing happened to it: its owner and the admin see it queued.
        assert c.get(f"/v2/tasks/{task_id}", headers=ACME).json()["status"] == "queued"
        assert c.get(f"/v2/tasks/{task_id}", headers=ADMIN).json()["tenant"] == "acme"
        assert c.post(f"/v2/tasks/{task_id}/cancel", headers=ACME).status_code == 204
        assert c.get(f"/v2/tasks/{task_id}", headers=ACME).json()["status"] == "cancelled"


def test_orch_151_the_keys_tenant_wins_over_the_body(orchd: AppFactory) -> None:
    """ORCH-151: the key's tenant wins over the body."""
    with orchd(**SETTINGS) as c:
        r = c.post("/v2/tasks", json={**TASK, "tenant": "beta"}, headers=ACME)
        assert c.get(f"/v2/tasks/{r.json()['task_id']}", headers=ACME).json()["tenant"] == "acme"
        # A bare key has no tenant, and cannot borrow one.
        r = c.post("/v2/tasks", json={**TASK, "tenant": "acme"}, headers=BARE)
        record = c.get(f"/v2/tasks/{r.json()['task_id']}", headers=BARE).json()
        assert record["tenant"] is None
        assert c.get(f"/v2/tasks/{r.json()['task_id']}", headers=ACME).status_code == 404


def test_orch_151_task_ids_are_unguessable_and_not_shared(orchd: AppFactory) -> None:
    """ORCH-151: task ids are unguessable and not shared."""
    with orchd(**SETTINGS) as c:
        ids = {c.post("/v2/tasks", json=TASK, headers=ACME).json()["task_id"] for _ in range(20)}
        assert len(ids) == 20
        assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)  # 128 random bits
        mine = c.post("/v2/tasks", json={**TASK, "task_id": "job-1"}, headers=ACME)
        assert mine.status_code == 202
        # Another tenant reusing a client-chosen id gets a conflict, not acme's task.
        theirs = c.post("/v2/tasks", json={**TASK, "task_id": "job-1"}, headers=BETA)
        assert theirs.status_code == 409 and "tenant" not in theirs.text
        again = c.post("/v2/tasks", json={**TASK, "task_id": "job-1"}, headers=ACME)
        assert again.status_code == 202 and again.json()["task_id"] == "job-1"


def test_orch_153_admin_routes_need_the_admin_token(orchd: AppFactory) -> None:
    """ORCH-153: admin routes need the admin token."""
    reject_all = "def admit(task, cluster):\n    return {'accept': False, 'reason': 'no'}\n"
    body = {"source": reject_all}
    with orchd(**SETTINGS) as c:
        # The cluster token, which every pool host holds, no longer installs a policy.
        r = c.post("/v2/admin/policy", headers=CT, json=body)
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
        assert c.post("/v2/admin/policy", headers=ACME, json=body).status_code == 403
        assert c.post("/v2/admin/policy", json=body).status_code == 401
        assert c.post("/v2/tasks", json=TASK, headers=ACME).status_code == 202
        assert c.post("/v2/admin/policy", headers=ADMIN, json=body).status_code == 200
        assert c.post("/v2/tasks", json=TASK, headers=ACME).status_code == 429
    # Without --admin-token, admin routes are off (unless nothing at all is configured).
    with orchd(api_keys=KEYS, cluster_token="ct") as c:
        r = c.post("/v2/admin/policy", headers=CT, json=body)
        assert r.status_code == 403 and "--admin-token" in r.json()["detail"]


def test_orch_154_policy_compile_and_dry_run_leave_the_event_loop(
    orchd: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ORCH-154: policy compile and dry run leave the event loop."""
    from orchestratord.policy.engine import PolicyEngine

    on_loop: list[bool] = []
    original = PolicyEngine.from_source.__func__  # type: ignore[attr-defined]

    def spy(cls: type[PolicyEngine], *args: Any, **kwargs: Any) -> PolicyEngine:
        try:
            asyncio.get_running_loop()
            on_loop.append(True)
        except RuntimeError:
            on_loop.append(False)
        engine: PolicyEngine = original(cls, *args, **kwargs)
        return engine

    monkeypatch.setattr(PolicyEngine, "from_source", classmethod(spy))
    src = "def admit(task, cluster):\n    return {'accept': True}\n"
    with orchd(**SETTINGS) as c:
        assert c.post("/v2/admin/policy", headers=ADMIN, json={"source": src}).status_code == 200
    assert on_loop and not any(on_loop)  # at start-up and on reload


def _chunks(total: int) -> Iterator[bytes]:
    sent = 0
    while sent < total:
        yield b" " * 65536
        sent += 65536


def test_orch_155_bodies_over_the_cap_are_413_before_parsing(orchd: AppFactory) -> None:
    with orchd(**SETTINGS) as c:
        big = b'{"model": "m", "prompt": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}'
        r = c.post("/v2/tasks", content=big, headers={**ACME, "content-type": "application/json"})
        assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"
        # Without a Content-Length (chunked), the cap applies as the bytes come.
        r = c.post("/v2/tasks", content=_chunks(MAX_BODY_BYTES + 65536), headers=ACME)
        assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"
        r = c.post("/v1/chat/completions", content=big, headers=ACME)
        assert r.status_code == 413
        assert c.post("/v2/tasks", json=TASK, headers=ACME).status_code == 202


def test_orch_152_list_tasks_is_tenant_scoped_newest_first_and_paged(
    orchd: AppFactory,
) -> None:
    """ORCH-152: list tasks is tenant scoped newest first and paged."""
    with orchd(**SETTINGS) as c:
        acme = [c.post("/v2/tasks", json=TASK, headers=ACME).json()["task_id"] for _ in range(5)]
        beta = c.post("/v2/tasks", json=TASK, headers=BETA).json()["task_id"]
        c.post(f"/v2/tasks/{acme[0]}/cancel", headers=ACME)
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
            page = c.get("/v2/tasks", params=params, headers=ACME).json()
            assert len(page["tasks"]) <= 2
            seen += [t["id"] for t in page["tasks"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert seen == acme[::-1]  # newest first, every page, no other tenant
        r = c.get("/v2/tasks", params={"status": "cancelled"}, headers=ACME).json()
        assert [t["id"] for t in r["tasks"]] == [acme[0]]
        assert r["tasks"][0]["stop_reason"] == "CANCELLED"
        # Only the admin lists other tenants.
        assert c.get("/v2/tasks", params={"tenant": "beta"}, headers=ACME).status_code == 403
        r = c.get("/v2/tasks", params={"tenant": "beta"}, headers=ADMIN).json()
        assert [t["id"] for t in r["tasks"]] == [beta]
        assert len(c.get("/v2/tasks", headers=ADMIN).json()["tasks"]) == 6
        bad = c.get("/v2/tasks", params={"limit": 501, "cursor": "nope"}, headers=ACME)
        assert bad.status_code == 400
        assert {e["field"] for e in bad.json()["errors"]} == {"limit", "cursor"}
