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
        assert all(len(i) == 48 and int(i, 16) >= 0 for i in ids)  # time, sequence, 128 random


def test_orch_156_client_task_ids_are_scoped_per_tenant(orchd: AppFactory) -> None:
    """ORCH-156, ORCH-013, ORCH-150: another tenant's use of a client-chosen task_id is another
    task (202, not a 409 telling that the id exists); each tenant reads, follows, lists and
    cancels its own by that id, the admin tells them apart by their server-made ids, and all
    of it holds once the records come from the database (after a restart)."""
    other = {**TASK, "prompt": "another prompt"}
    with orchd(**SETTINGS) as c:
        mine = c.post("/v2/tasks", json={**TASK, "task_id": "job-1"}, headers=ACME)
        assert mine.status_code == 202 and mine.json()["task_id"] == "job-1"
        assert mine.headers["location"] == "/v2/tasks/job-1"
        theirs = c.post("/v2/tasks", json={**other, "task_id": "job-1"}, headers=BETA)
        assert theirs.status_code == 202 and theirs.json()["task_id"] == "job-1"
        again = c.post("/v2/tasks", json={**TASK, "task_id": "job-1"}, headers=ACME)
        assert again.status_code == 202 and again.json()["task_id"] == "job-1"
        differs = c.post("/v2/tasks", json={**other, "task_id": "job-1"}, headers=ACME)
        assert differs.status_code == 409
        acme = c.get("/v2/tasks/job-1", headers=ACME).json()
        beta = c.get("/v2/tasks/job-1", headers=BETA).json()
        assert (acme["id"], acme["tenant"], beta["id"], beta["tenant"]) == (
            "job-1",
            "acme",
            "job-1",
            "beta",
        )
        assert acme["prompt_hash"] != beta["prompt_hash"]
        # The admin (and the bare key's unnamed tenant) has no task job-1 of its own.
        assert c.get("/v2/tasks/job-1", headers=ADMIN).status_code == 404
        assert c.get("/v2/tasks/job-1", headers=BARE).status_code == 404
        listed = c.get("/v2/tasks", headers=ADMIN).json()["tasks"]
        server_ids = {t["tenant"]: t["id"] for t in listed if t["client_id"] == "job-1"}
        assert set(server_ids) == {"acme", "beta"} and "job-1" not in server_ids.values()
        assert c.get(f"/v2/tasks/{server_ids['beta']}", headers=ADMIN).json()["tenant"] == "beta"
        assert c.get(f"/v2/tasks/{server_ids['beta']}", headers=ACME).status_code == 404
        assert [t["id"] for t in c.get("/v2/tasks", headers=BETA).json()["tasks"]] == ["job-1"]
        assert c.post("/v2/tasks/job-1/cancel", headers=BETA).status_code == 204
        assert c.get("/v2/tasks/job-1", headers=BETA).json()["status"] == "cancelled"
        assert c.get("/v2/tasks/job-1", headers=ACME).json()["status"] == "queued"
    with orchd(**SETTINGS) as c:  # a restart: the records come from the database
        acme = c.get("/v2/tasks/job-1", headers=ACME).json()
        beta = c.get("/v2/tasks/job-1", headers=BETA).json()
        assert (acme["tenant"], acme["error_code"]) == ("acme", "WORKER_RESET")
        assert (beta["tenant"], beta["status"]) == ("beta", "cancelled")
        assert acme["id"] == beta["id"] == "job-1"
        assert c.get("/v2/tasks/job-1", headers=BARE).status_code == 404
        # Resubmitting is idempotent from the database too; a third tenant's id is its own.
        again = c.post("/v2/tasks", json={**TASK, "task_id": "job-1"}, headers=ACME)
        assert again.status_code == 202 and again.json()["status"] == "failed"
        bare = c.post("/v2/tasks", json={**TASK, "task_id": "job-1"}, headers=BARE)
        assert bare.status_code == 202 and bare.json()["status"] == "queued"


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
