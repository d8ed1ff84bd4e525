"""The audit trail and the stored keys in process (issue 22, items 1 and 5): every admin action
that exists is recorded, with who, what, before and after, on a real sqlite database.
ORCH-300, ORCH-301, ORCH-306, ORCH-307."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from orchestratord.runtime.audit import REDACTED, redact
from orchestratord.runtime.keys import KeyRing, StoredKey, hash_secret, new_secret
from orchestratord.store import admin as admin_store
from orchestratord.store.db import Store
from tests.orchestratord.conftest import AppFactory

AT = {"authorization": "Bearer at"}
CT = {"authorization": "Bearer ct"}
SETTINGS: dict[str, Any] = {"cluster_token": "ct", "admin_token": "at"}
FLEET: dict[str, Any] = {
    "models": {"m": {"source": "catalog:m", "pools": ["p1"], "slots": 2}},
    "scaling": {"target_ttft_ms": 1000, "cooldown_s": 30},
}
POLICY = 'def admit(task, cluster):\n    return {"accept": True}\n'


def register(c: Any, wid: str) -> None:
    reg = {"worker_id": wid, "url": "http://127.0.0.1:9", "model": "m", "pool": "p1",
           "slots_total": 2}  # fmt: skip
    assert c.post("/v2/workers/register", json=reg, headers=CT).status_code == 201


def entries(c: Any, **params: Any) -> list[dict[str, Any]]:
    r = c.get("/v2/admin/audit", params=params, headers=AT)
    assert r.status_code == 200, r.text
    return list(r.json()["entries"])


def test_orch_306_every_admin_action_is_recorded_with_who_what_before_and_after(
    orchd: AppFactory, tmp_path: Path
) -> None:
    """ORCH-306, ORCH-307: policy put and reload, fleet put, an action's lease and result, a
    drain, a worker's removal (by the admin and by the cluster token), a key's create and
    revoke, and a tenant's limits put each leave one entry naming the credential, never a
    secret; entries are newest first, filtered by action (exact or prefix) and time, and
    outlive a restart."""
    policy_file = tmp_path / "policy.star"
    policy_file.write_text(POLICY)
    with orchd(policy=policy_file, **SETTINGS) as c:
        old_sha = c.post("/v2/admin/policy", json={}, headers=AT).json()["sha256"]
        put = c.post("/v2/admin/policy", json={"source": POLICY + "# v2\n"}, headers=AT).json()
        assert c.put("/v2/fleet", json=FLEET, headers=AT).status_code == 200
        action = "/v2/fleet/actions/spawn:m.p1.0"
        assert c.post(action + "/lease", json={"holder": "a"}, headers=AT).status_code == 200
        result = {"holder": "a", "ok": True, "detail": "up"}
        assert c.post(action + "/result", json=result, headers=AT).status_code == 204
        register(c, "w1")
        register(c, "w2")
        assert c.post("/v2/workers/w1/drain", headers=AT).status_code == 202
        assert c.post("/v2/workers/w1/undrain", headers=AT).status_code == 202
        assert c.post("/v2/workers/w1/drain", headers=AT).status_code == 202
        assert c.delete("/v2/workers/w1", headers=AT).status_code == 204
        assert c.delete("/v2/workers/w2", headers=CT).status_code == 204
        made = c.post("/v2/admin/keys", json={"tenant": "acme", "label": "ci"}, headers=AT)
        secret, key_id = made.json()["secret"], made.json()["id"]
        assert c.delete(f"/v2/admin/keys/{key_id}", headers=AT).status_code == 200
        limits = {"rpm": 5, "weight": 2.0}
        assert c.put("/v2/admin/tenants/acme/limits", json=limits, headers=AT).status_code == 200
        # Refused requests change nothing and are not recorded.
        assert (
            c.post("/v2/admin/policy", json={"source": "def admit("}, headers=AT).status_code == 400
        )
        assert c.put("/v2/fleet", json=FLEET, headers=CT).status_code == 403

        got = entries(c)
        assert [(e["who"], e["action"], e["target"]) for e in got] == [
            ("admin", "limits.put", "acme"),
            ("admin", "keys.revoke", key_id),
            ("admin", "keys.create", key_id),
            ("cluster", "workers.remove", "w2"),
            ("admin", "workers.remove", "w1"),
            ("admin", "workers.drain", "w1"),
            ("admin", "workers.undrain", "w1"),
            ("admin", "workers.drain", "w1"),
            ("admin", "fleet.action.result", "spawn:m.p1.0"),
            ("admin", "fleet.action.lease", "spawn:m.p1.0"),
            ("admin", "fleet.put", "fleet"),
            ("admin", "policy.put", "policy"),
            ("admin", "policy.reload", "policy"),
        ]  # fmt: skip
        by_action = {e["action"]: e for e in got}
        assert by_action["policy.reload"]["after"]["sha256"] == old_sha
        assert by_action["policy.put"]["before"]["sha256"] == old_sha
        assert by_action["policy.put"]["after"]["sha256"] == put["sha256"] != old_sha
        assert by_action["fleet.put"]["before"]["models"] == {}
        assert by_action["fleet.put"]["after"]["models"]["m"]["pools"] == ["p1"]
        assert by_action["fleet.action.result"]["after"] == result
        assert by_action["workers.drain"]["after"]["state"] == "drained"
        assert by_action["keys.revoke"]["before"]["revoked"] is False
        assert by_action["keys.revoke"]["after"]["revoked"] is True
        assert by_action["keys.create"]["after"]["tenant"] == "acme"
        assert by_action["limits.put"]["before"] is None
        assert by_action["limits.put"]["after"]["rpm"] == 5
        assert all(e["at_ms"] > 0 for e in got) and secret not in str(got)

        keys_only = entries(c, action="keys.")
        assert [e["action"] for e in keys_only] == ["keys.revoke", "keys.create"]
        assert [e["target"] for e in entries(c, action="workers.remove", limit=1)] == ["w2"]
        assert entries(c, since=got[0]["at_ms"] + 1) == []
        bad = c.get("/v2/admin/audit", params={"limit": "0", "since": "x", "y": 1}, headers=AT)
        assert bad.status_code == 400
        assert {e["field"] for e in bad.json()["errors"]} == {"limit", "since", "y"}
    with orchd(policy=policy_file, **SETTINGS) as c:
        assert entries(c) == got


def test_orch_306_secrets_in_before_and_after_are_redacted() -> None:
    """ORCH-306: a secret-named field at any depth, and any string that is a key's secret."""
    secret = new_secret()
    value = {
        "token": "t",
        "nested": [{"api_key": "k", "keep": 1}, {"x": secret}],
        "Authorization": "Bearer x",
        "name": "policy",
        "hf_token": "h",
        "client_secret": "c",
        "password": "p",
    }
    assert redact(value) == {
        "token": REDACTED,
        "nested": [{"api_key": REDACTED, "keep": 1}, {"x": REDACTED}],
        "Authorization": REDACTED,
        "name": "policy",
        "hf_token": REDACTED,
        "client_secret": REDACTED,
        "password": REDACTED,
    }


def test_orch_306_counts_of_tokens_are_not_taken_for_secrets() -> None:
    """ORCH-306: a tenant's token budgets and a pool's bytes per token are what an operator
    reads the trail for; only credential-named fields are redacted."""
    limits = {"daily_tokens": 1000, "monthly_tokens": 9000, "tpm": 50}
    assert redact(limits) == limits
    assert redact({"kv_bytes_per_token": 36864}) == {"kv_bytes_per_token": 36864}


def test_orch_300_key_input_is_checked_before_anything_is_stored(orchd: AppFactory) -> None:
    """ORCH-300: a bad body is 400 naming every field, and stores no key; an unknown id is 404;
    an expiry in the past cannot be given; a key past its expiry is 401 saying so."""
    with orchd(**SETTINGS) as c:
        bad = c.post(
            "/v2/admin/keys",
            json={"tenant": "no spaces", "label": "", "ttl_s": 5, "expires_ms": 1, "x": 1},
            headers=AT,
        )
        assert bad.status_code == 400
        assert {e["field"] for e in bad.json()["errors"]} == {"tenant", "label", "expires_ms", "x"}
        assert c.post("/v2/admin/keys", json={}, headers=AT).json()["errors"] == [
            {"field": "tenant", "message": "is required"}
        ]
        assert c.get("/v2/admin/keys", headers=AT).json() == {"keys": []}
        assert c.delete("/v2/admin/keys/key_nope", headers=AT).status_code == 404
        # Still no key: the client routes stay as they were (open on loopback).
        assert c.get("/v2/tasks").status_code == 200
        made = c.post("/v2/admin/keys", json={"tenant": "acme", "ttl_s": 1}, headers=AT).json()
        assert made["expires_ms"] - made["created_ms"] == 1000
        ring: KeyRing = c.app_state["keys"]
        key = ring.get(made["id"])
        assert key is not None
        key.expires_ms = key.created_ms  # expired, without waiting a second
        r = c.get("/v2/tasks", headers={"authorization": f"Bearer {made['secret']}"})
        assert r.status_code == 401 and "expired" in r.json()["detail"]


def test_orch_301_revoking_the_last_key_does_not_open_the_daemon(orchd: AppFactory) -> None:
    """ORCH-301: once a key is stored, client routes need a key, even when every stored key is
    revoked; the admin token still works there."""
    with orchd(**SETTINGS) as c:
        assert c.get("/v2/tasks").status_code == 200  # no key of any kind: open on loopback
        made = c.post("/v2/admin/keys", json={"tenant": "acme"}, headers=AT).json()
        assert c.get("/v2/tasks").status_code == 401
        assert c.delete(f"/v2/admin/keys/{made['id']}", headers=AT).status_code == 200
        assert c.get("/v2/tasks").status_code == 401
        assert c.get("/v2/tasks", headers=AT).status_code == 200


def test_orch_304_the_store_keeps_hashes_and_revocations(store_url: str) -> None:
    """ORCH-304, ORCH-340: rows hold the SHA-256, never the secret; a second revoke keeps the
    first time; last-used stamps are saved in one statement; on SQLite and PostgreSQL."""
    store = Store(store_url).open()
    secret = new_secret()
    key = StoredKey(id="key_1", tenant="acme", key_hash=hash_secret(secret.encode()), created_ms=5)
    admin_store.insert_key(store, key.row())
    admin_store.revoke_key(store, "key_1", 10)
    admin_store.revoke_key(store, "key_1", 20)
    admin_store.save_last_used(store, [("key_1", 7)])
    [row] = admin_store.load_keys(store)
    assert row["revoked_ms"] == 10 and row["last_used_ms"] == 7
    assert secret not in str(row) and row["key_hash"] == hash_secret(secret.encode())
    ring = KeyRing()
    ring.load([StoredKey(**row)])
    assert ring.get_by_secret(secret.encode()) is not None
    assert ring.get_by_secret(b"llk_other") is None
    store.close()


def test_orch_307_the_writer_writes_in_batches_off_the_loop(store_url: str) -> None:
    """ORCH-307, ORCH-340, ORCH-342: `record` returns at once; one flush writes what gathered;
    the audit trail's generated `seq` orders entries of the same millisecond on both
    back-ends."""
    store = Store(store_url).open()

    async def run() -> list[dict[str, Any]]:
        from orchestratord.runtime.audit import AuditLog

        log = AuditLog(store, clock=lambda: 42)
        for n in range(3):
            log.record("admin", "test.action", f"t{n}", after={"password": "p", "n": n})
        assert admin_store.list_audit(store, since_ms=None, action=None, limit=10) == []
        await log.flush()
        return admin_store.list_audit(store, since_ms=None, action=None, limit=10)

    rows = asyncio.run(run())
    assert [r["target"] for r in rows] == ["t2", "t1", "t0"]
    assert rows[0]["after"] == {"password": REDACTED, "n": 2}
    store.close()
