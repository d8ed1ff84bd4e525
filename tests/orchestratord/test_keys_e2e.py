"""API keys made and revoked live (issue 22, item 1), end to end: a real orchestratord and a real
worker on loopback, the real `llorch` CLI as a subprocess, the real `openai` client, real sqlite.
ORCH-300..305, CTL-070..073."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.orchestratord.cluster import (
    ADMIN,
    AT,
    MODEL,
    open_task_stream,
    orchestratord,
    read_events,
    wait_for,
    worker,
)
from tests.support import free_port

pytestmark = pytest.mark.e2e
LONG = {"model": MODEL, "prompt": "hello", "max_tokens": 16000, "ignore_eos": True, "seed": 1}
ROOT = Path(__file__).resolve().parents[2]


def llorch(url: str, *args: str, token: str | None = AT) -> subprocess.CompletedProcess[str]:
    """The operator's CLI as the operator runs it: URL and admin token from the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLORCH_")}
    env["LLORCH_ORCHESTRATOR_URL"] = url
    if token is not None:
        env["LLORCH_ADMIN_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "llorch_ctl", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def create_key(url: str, *args: str) -> tuple[str, str, str]:
    """`llorch keys create ...`: (secret from stdout, key id, stderr)."""
    r = llorch(url, "keys", "create", *args)
    assert r.returncode == 0, r.stderr
    secret = r.stdout.strip()
    assert secret.startswith("llk_") and len(secret) == 4 + 43
    [key_id] = [w for w in r.stderr.split() if w.startswith("key_")]
    return secret, key_id, r.stderr


def keys_listed(url: str) -> dict[str, dict[str, Any]]:
    r = llorch(url, "keys", "list", "--json")
    assert r.returncode == 0, r.stderr
    return {k["id"]: k for k in json.loads(r.stdout)}


@pytest.fixture
def state(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "state"


def test_orch_300_302_cli_key_works_at_once_revoke_refuses_and_ends_streams(
    tiny_model: Path, tmp_path: Path, state: Path
) -> None:
    """ORCH-300, ORCH-301, ORCH-302, ORCH-303, CTL-070, CTL-071, CTL-072: a key made with
    `llorch keys create` works on the next request, /v2 and /v1; `llorch keys revoke` refuses
    the next request with 401 and ends the streams open with it (the /v2 submission, a /v2
    follower, the fleet feed, and OpenAI chat and Responses streams read by the `openai` client)
    with an error naming the revocation; another key, and the flag key, keep working; keys and
    their revocation outlive a restart on the same database; the secret is in no log, nor in
    the database's bytes."""
    port = free_port()
    logs: list[str] = []
    with (
        orchestratord(
            tmp_path, "--api-key", "flagco:flag-key", "--log-level", "debug", port=port,
            state_dir=state,
        ) as orch,
        worker(tiny_model, tmp_path, orch.url, "w1", slots=4),
    ):  # fmt: skip
        url = orch.url
        secret, key_id, created_err = create_key(url, "--tenant", "acme", "--label", "ci")
        other, other_id, _ = create_key(url, "--tenant", "beta", "--expires-in", "30d")
        # At once: no restart, no reload.
        r = httpx.post(url + "/v2/tasks", json={**LONG, "max_tokens": 2}, headers=bearer(secret))
        assert r.status_code == 202
        task = httpx.get(url + f"/v2/tasks/{r.json()['task_id']}", headers=bearer(secret)).json()
        assert task["tenant"] == "acme"
        assert httpx.get(url + "/v1/models", headers=bearer(secret)).status_code == 200
        listed = keys_listed(url)
        assert listed[key_id]["tenant"] == "acme" and listed[key_id]["label"] == "ci"
        assert listed[key_id]["last_used_ms"] is not None and not listed[key_id]["revoked"]
        assert listed[other_id]["expires_ms"] - listed[other_id]["created_ms"] == 30 * 86_400_000
        assert "secret" not in json.dumps(listed) and secret not in json.dumps(listed)

        # Three streams open with the key, each past its first tokens.
        client = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0)
        chat = client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=16000,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        chat_iter = iter(chat)
        next(chat_iter)
        next(chat_iter)
        responses = client.responses.create(
            model=MODEL,
            input="hi",
            max_output_tokens=16000,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        responses_iter = iter(responses)
        for event in responses_iter:
            if event.type == "response.output_text.delta":
                break
        with contextlib.ExitStack() as streams:
            submitted = streams.enter_context(
                open_task_stream(url, LONG, head=3, headers=bearer(secret))
            )
            follow = streams.enter_context(
                httpx.stream(
                    "GET",
                    url + f"/v2/tasks/{submitted.task_id}/events",
                    headers=bearer(secret),
                    timeout=30,
                )
            )
            follow_lines = follow.iter_lines()
            assert read_events(follow_lines, stop_after=1)[-1].event == "token"
            feed = streams.enter_context(
                httpx.stream("GET", url + "/v2/events", headers=bearer(secret), timeout=30)
            )
            feed_lines = feed.iter_lines()
            assert read_events(feed_lines, until="hello")[-1].event == "hello"
            chat_error: list[BaseException] = []
            responses_last: list[Any] = []

            def drain_openai() -> None:
                try:
                    for _ in chat_iter:
                        pass
                except openai.APIError as e:
                    chat_error.append(e)
                responses_last.extend(list(responses_iter)[-1:])

            reader = threading.Thread(target=drain_openai)
            reader.start()
            revoked = llorch(url, "keys", "revoke", key_id)
            assert revoked.returncode == 0 and key_id in revoked.stderr
            # The next request is refused, naming the revocation.
            r = httpx.get(url + "/v2/tasks", headers=bearer(secret))
            assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
            assert "revoked" in r.json()["detail"]
            r = httpx.get(url + "/v1/models", headers=bearer(secret))
            assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
            # The open streams end with an error event.
            sub_tail = read_events(submitted.lines)
            follow_tail = read_events(follow_lines)
            feed_tail = read_events(feed_lines)
            reader.join(timeout=30)
        assert not reader.is_alive()
        for tail in (sub_tail, follow_tail, feed_tail):
            assert tail[-1].event == "error"
            assert tail[-1].data["code"] == "UNAUTHORIZED" and key_id in tail[-1].data["message"]
        [chat_err] = chat_error
        assert "revoked" in str(chat_err)
        [last] = responses_last  # /v1/responses ends with its own `error` event
        assert last.type == "error" and last.code == "UNAUTHORIZED" and "revoked" in last.message
        chat.close()
        responses.close()
        client.close()
        # The submitting stream owned its task: it ended, cancelled.
        wait_for(
            lambda: httpx.get(url + f"/v2/tasks/{submitted.task_id}", headers=ADMIN).json()["status"] == "cancelled",  # noqa: E501
            what="the revoked key's task to be cancelled",
        )  # fmt: skip
        # The other key and the flag key are unaffected.
        assert httpx.get(url + "/v2/tasks", headers=bearer(other)).status_code == 200
        assert httpx.get(url + "/v2/tasks", headers=bearer("flag-key")).status_code == 200
        assert keys_listed(url)[key_id]["revoked"]
        logs.append(orch.log_text())

    # A new orchestratord on the same database: the keys are there, the revocation too.
    with orchestratord(tmp_path, "--log-level", "debug", port=free_port(), state_dir=state) as o2:
        assert httpx.get(o2.url + "/v2/tasks", headers=bearer(other)).status_code == 200
        r = httpx.get(o2.url + "/v2/tasks", headers=bearer(secret))
        assert r.status_code == 401 and "revoked" in r.json()["detail"]
        # Only stored keys now, revoked or not: no key is no access (ORCH-301).
        assert httpx.get(o2.url + "/v2/tasks").status_code == 401
        listed = keys_listed(o2.url)
        assert set(listed) == {key_id, other_id} and listed[key_id]["revoked"]
        assert listed[key_id]["last_used_ms"] is not None  # saved when the first one stopped
        logs.append(o2.log_text())

    # ORCH-304: the secrets are in no log and not in the database; their hashes are.
    logs += [p.read_text(errors="replace") for p in tmp_path.glob("*.log")]
    logs.append(created_err)
    for text in logs:
        assert secret not in text and other not in text
    db = b"".join(p.read_bytes() for p in state.glob("orchestratord.sqlite3*"))
    for s in (secret, other):
        assert s.encode() not in db
        assert hashlib.sha256(s.encode()).hexdigest().encode() in db


def test_orch_305_a_tenant_key_cannot_call_admin_endpoints(tmp_path: Path, state: Path) -> None:
    """ORCH-305, CTL-073: a stored key (or a flag key) on /v2/admin* and /v2/fleet is 403 and
    the reply names the admin token's flag and variable; without a token it is 401; `llorch
    keys list` with a tenant key fails in one line with the API's reason."""
    with orchestratord(tmp_path, "--api-key", "flagco:flag-key", state_dir=state) as orch:
        secret, _, _ = create_key(orch.url, "--tenant", "acme")
        for headers in (bearer(secret), bearer("flag-key")):
            for method, path in (
                ("GET", "/v2/admin/keys"),
                ("POST", "/v2/admin/keys"),
                ("GET", "/v2/admin/audit"),
                ("GET", "/v2/fleet"),
            ):
                r = httpx.request(method, orch.url + path, headers=headers, json={"tenant": "x"})
                assert r.status_code == 403, (path, r.text)
                assert "--admin-token" in r.json()["detail"]
                assert "LLORCH_ADMIN_TOKEN" in r.json()["detail"]
        r = httpx.get(orch.url + "/v2/admin/keys")
        assert r.status_code == 401 and "LLORCH_ADMIN_TOKEN" in r.json()["detail"]
        cli = llorch(orch.url, "keys", "list", token=secret)
        assert cli.returncode == 211 and cli.stdout == ""
        assert cli.stderr.startswith("llorch: ") and cli.stderr.count("\n") == 1
        assert "403 FORBIDDEN" in cli.stderr and "LLORCH_ADMIN_TOKEN" in cli.stderr
        assert secret not in cli.stderr
        # Only one key exists: the admin's; a refused create made none.
        assert len(keys_listed(orch.url)) == 1


def test_ctl_072_rotate_and_audit_through_the_cli(
    tmp_path: Path, state: Path, store_url: str
) -> None:
    """CTL-072, CTL-073, ORCH-306, ORCH-340: `llorch keys rotate` makes a new key for the same
    tenant and label and revokes the old one; `llorch audit` lists both actions, newest first,
    with the admin as who, and never a secret; with the store on SQLite and on PostgreSQL."""
    with orchestratord(tmp_path, "--db-url", store_url, state_dir=state) as orch:
        old, old_id, _ = create_key(orch.url, "--tenant", "acme", "--label", "svc")
        r = llorch(orch.url, "keys", "rotate", old_id)
        assert r.returncode == 0, r.stderr
        new = r.stdout.strip()
        assert new.startswith("llk_") and new != old
        assert f"revoked key {old_id}" in r.stderr
        assert httpx.get(orch.url + "/v2/tasks", headers=bearer(old)).status_code == 401
        assert httpx.get(orch.url + "/v2/tasks", headers=bearer(new)).status_code == 200
        listed = keys_listed(orch.url)
        [new_id] = [k for k in listed if k != old_id]
        assert (listed[new_id]["tenant"], listed[new_id]["label"]) == ("acme", "svc")
        table = llorch(orch.url, "keys", "list")
        assert table.returncode == 0 and "revoked" in table.stdout and "active" in table.stdout
        audit = llorch(orch.url, "audit", "--json", "--since", "1h")
        assert audit.returncode == 0, audit.stderr
        entries = json.loads(audit.stdout)
        assert [(e["action"], e["target"], e["who"]) for e in entries] == [
            ("keys.revoke", old_id, "admin"),
            ("keys.create", new_id, "admin"),
            ("keys.create", old_id, "admin"),
        ]
        assert old not in audit.stdout and new not in audit.stdout
        shown = llorch(orch.url, "audit", "--action", "keys.revoke")
        assert shown.returncode == 0 and shown.stdout.count("keys.") == 1
        # A SIGHUP reload is recorded too, as `sighup`.
        orch.proc.send_signal(signal.SIGHUP)

        def reloads() -> list[Any]:
            r = httpx.get(orch.url + "/v2/admin/audit", params={"action": "reload"}, headers=ADMIN)
            return list(r.json()["entries"])

        [reload] = wait_for(reloads, what="the SIGHUP reload's audit entry")
        assert (reload["who"], reload["target"]) == ("sighup", "policy+fleet")
        bad = llorch(orch.url, "keys", "create", "--tenant", "acme", "--expires-in", "soon")
        assert bad.returncode == 200 and bad.stderr.startswith("llorch: --expires-in 'soon'")
