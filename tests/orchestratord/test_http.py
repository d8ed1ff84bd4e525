"""The /v2 API in process: error shape, auth, queue limits, deadlines, cancel, worker routes."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from starlette.testclient import TestClient

from orchestratord.policy import builtin_source
from tests.orchestratord.conftest import AppFactory

TASK = {"model": "m", "prompt": "hello", "max_tokens": 4}
CT = {"authorization": "Bearer ct"}


def events(client: TestClient, task_id: str, **headers: str) -> list[tuple[int, str, str]]:
    with client.stream("GET", f"/v2/tasks/{task_id}/events", headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        text = r.read().decode()
    return [
        (int(i), e, d) for i, e, d in re.findall(r"id: (\d+)\nevent: (\w+)\ndata: (.*)\n\n", text)
    ]


def test_problem_shape_and_field_errors(orchd: AppFactory) -> None:
    """ORCH-011, ORCH-082: a bad body is 400 INVALID_PARAMS (problem+json, code, retriable) listing
    every bad field; a non-integer Last-Event-ID is 400 (ORCH-021)."""
    with orchd() as c:
        r = c.post("/v2/tasks", json={"prompt": "x", "max_tokens": -1})
        assert r.status_code == 400
        assert r.headers["content-type"] == "application/problem+json"
        body = r.json()
        assert body["code"] == "INVALID_PARAMS" and body["retriable"] is False
        assert {e["field"] for e in body["errors"]} == {"model", "max_tokens"}
        r = c.post("/v2/tasks", content=b"{not json")
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "body"
        r = c.get("/v2/tasks/nope")
        assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"
        assert c.post("/v2/tasks/nope/cancel").status_code == 404
        assert c.get("/v2/tasks/nope/events").status_code == 404
        r = c.get("/v2/tasks/x/events", headers={"last-event-id": "abc"})
        assert r.status_code == 400 and r.json()["errors"][0]["field"] == "Last-Event-ID"
        assert c.delete("/v2/tasks").status_code == 405


def test_task_without_worker_waits_until_its_deadline(orchd: AppFactory) -> None:
    """ORCH-012, ORCH-033: accepted is 202 queued with Location; with no worker the task waits, then
    ends DEADLINE_UNMET."""
    with orchd() as c:
        r = c.post("/v2/tasks", json={**TASK, "deadline_ms": 200})
        assert r.status_code == 202
        body = r.json()
        assert body["status"] == "queued" and body["queue_position"] == 0
        assert r.headers["location"] == f"/v2/tasks/{body['task_id']}"
        evs = events(c, body["task_id"])
        assert [e for _, e, _ in evs] == ["queued", "error"]
        assert '"DEADLINE_UNMET"' in evs[1][2]
        rec = c.get(f"/v2/tasks/{body['task_id']}").json()
        assert rec["status"] == "failed" and rec["error_code"] == "DEADLINE_UNMET"
        assert "hello" not in str(rec)
        assert (
            'llorch_orchestrator_tasks_total{code="DEADLINE_UNMET"} 1.0' in c.get("/metrics").text
        )


def test_queue_full_is_429_with_retry_after(orchd: AppFactory) -> None:
    """ORCH-032, ORCH-082: a full queue under reject is 429 QUEUE_FULL with Retry-After and
    retry_after_ms."""
    with orchd(queue_capacity=2) as c:
        for _ in range(2):
            assert c.post("/v2/tasks", json=TASK).status_code == 202
        r = c.post("/v2/tasks", json=TASK)
        assert r.status_code == 429
        assert r.json()["code"] == "QUEUE_FULL" and r.json()["retriable"] is True
        assert int(r.headers["retry-after"]) >= 1
        assert r.json()["retry_after_ms"] >= 1
        metrics = c.get("/metrics").text
        assert 'llorch_orchestrator_queue_depth{lane="interactive"} 2.0' in metrics
        assert 'llorch_orchestrator_tasks_total{code="QUEUE_FULL"} 1.0' in metrics


def test_drop_lru_evicts_batch_work_with_an_error_event(orchd: AppFactory) -> None:
    """ORCH-032: drop-lru evicts the queued batch task, which ends with error{QUEUE_FULL}."""
    with orchd(queue_capacity=1, queue_full_policy="drop-lru") as c:
        old = c.post("/v2/tasks", json={**TASK, "priority": "batch"}).json()["task_id"]
        assert c.post("/v2/tasks", json=TASK).status_code == 202
        evs = events(c, old)
        assert evs[-1][1] == "error" and '"QUEUE_FULL"' in evs[-1][2]


def test_cancel_queued_task_is_idempotent_and_ends_the_stream(orchd: AppFactory) -> None:
    """ORCH-015, ORCH-021: cancel is idempotent and ends the stream CANCELLED; Last-Event-ID resumes
    after N."""
    with orchd() as c:
        tid = c.post("/v2/tasks", json=TASK).json()["task_id"]
        assert c.post(f"/v2/tasks/{tid}/cancel").status_code == 204
        assert c.post(f"/v2/tasks/{tid}/cancel").status_code == 204
        evs = events(c, tid)
        assert [e for _, e, _ in evs] == ["queued", "end"]
        assert '"stop_reason":"CANCELLED"' in evs[1][2]
        assert c.get(f"/v2/tasks/{tid}").json()["status"] == "cancelled"
        # Resume after the first event: only what came after it.
        assert [i for i, _, _ in events(c, tid, **{"last-event-id": "0"})] == [1]


def test_client_task_id_is_idempotent(orchd: AppFactory) -> None:
    """ORCH-013: a known task_id with the same prompt returns that task; another prompt is 409
    CONFLICT."""
    with orchd() as c:
        a = c.post("/v2/tasks", json={**TASK, "task_id": "job-1"})
        b = c.post("/v2/tasks", json={**TASK, "task_id": "job-1"})
        assert a.status_code == b.status_code == 202
        assert a.json()["task_id"] == b.json()["task_id"] == "job-1"
        assert c.get("/health").json()["queue_depth"]["interactive"] == 1
        r = c.post("/v2/tasks", json={**TASK, "prompt": "other", "task_id": "job-1"})
        assert r.status_code == 409 and r.json()["code"] == "CONFLICT"


def test_api_keys_and_cluster_token(orchd: AppFactory) -> None:
    """ORCH-080, ORCH-081: client routes need a key (401 with WWW-Authenticate), TENANT:KEY sets the
    tenant; worker routes need the cluster token, a client key there is 403."""
    with orchd(api_keys=("acme:k1", "k2"), cluster_token="ct") as c:
        r = c.post("/v2/tasks", json=TASK)
        assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert (
            c.post("/v2/tasks", json=TASK, headers={"authorization": "Bearer bad"}).status_code
            == 401
        )
        r = c.post("/v2/tasks", json=TASK, headers={"authorization": "Bearer k1"})
        assert r.status_code == 202
        rec = c.get(f"/v2/tasks/{r.json()['task_id']}", headers={"authorization": "Bearer k1"})
        assert rec.json()["tenant"] == "acme"
        assert c.get("/health").status_code == 200
        assert c.get("/metrics").status_code == 200
        # Worker routes: the cluster token only; a client key there is forbidden.
        assert c.get("/v2/workers").status_code == 401
        r = c.get("/v2/workers", headers={"authorization": "Bearer k2"})
        assert r.status_code == 403 and r.json()["code"] == "FORBIDDEN"
        assert c.get("/v2/workers", headers=CT).status_code == 200
        assert c.post("/v2/tasks", json=TASK, headers=CT).status_code == 401


def test_worker_register_heartbeat_deregister(orchd: AppFactory) -> None:
    """ORCH-040: register 201, heartbeat 200 (404 for an unknown worker), bad bodies 400, delete 204
    then 404, the listing's fields; busy slots follow two heartbeats (ORCH-042)."""
    with orchd(cluster_token="ct") as c:
        reg = {
            "worker_id": "w1",
            "url": "http://127.0.0.1:9/",
            "model": "m",
            "backend": "cpu",
            "pool": "p1",
            "slots_total": 2,
            "n_ctx": 512,
        }
        r = c.post("/v2/workers/register", json=reg, headers=CT)
        assert r.status_code == 201 and r.json()["url"] == "http://127.0.0.1:9"
        for _ in range(2):  # busy slots that are not ours count once two heartbeats agree
            r = c.post(
                "/v2/workers/w1/heartbeat",
                headers=CT,
                json={"state": "ready", "slots_total": 2, "slots_busy": 1},
            )
            assert r.status_code == 200
        [w] = c.get("/v2/workers", headers=CT).json()["workers"]
        assert (w["state"], w["slots_busy"], w["pool"]) == ("ready", 1, "p1")
        assert c.get("/v2/meta/capabilities").json()["models"] == ["m"]
        assert 'llorch_orchestrator_workers{state="ready"} 1.0' in c.get("/metrics").text
        r = c.post(
            "/v2/workers/ghost/heartbeat",
            headers=CT,
            json={"state": "ready", "slots_total": 1, "slots_busy": 0},
        )
        assert r.status_code == 404
        r = c.post(
            "/v2/workers/register", headers=CT, json={**reg, "slots_total": 0, "url": "ftp://x"}
        )
        assert r.status_code == 400
        assert {e["field"] for e in r.json()["errors"]} == {"slots_total", "url"}
        r = c.post(
            "/v2/workers/w1/heartbeat", headers=CT, json={"state": "sleepy", "slots_total": 2}
        )
        assert r.status_code == 400
        assert c.delete("/v2/workers/w1", headers=CT).status_code == 204
        assert c.delete("/v2/workers/w1", headers=CT).status_code == 404
        assert c.get("/v2/workers", headers=CT).json()["workers"] == []


def test_capabilities_and_health_describe_this_orchestrator(orchd: AppFactory) -> None:
    """ORCH-016: capabilities carry api_version, the models of live workers only, the priorities,
    the queue's settings, the limits the API enforces, the event names and the running policy;
    /health (open) is {status, queue_depth, workers}; /metrics is open."""
    with orchd(
        queue_capacity=7, queue_full_policy="drop-lru", api_keys=("k",), cluster_token="ct"
    ) as c:
        key = {"authorization": "Bearer k"}
        caps = c.get("/v2/meta/capabilities", headers=key).json()
        assert set(caps) == {
            "api_version",
            "models",
            "priorities",
            "queue",
            "limits",
            "events",
            "policy",
        }
        assert isinstance(caps["api_version"], str) and caps["api_version"]
        assert caps["models"] == []  # no worker yet
        assert caps["priorities"] == ["interactive", "batch"]
        assert caps["queue"] == {"capacity": 7, "full_policy": "drop-lru"}
        assert caps["events"] == ["queued", "started", "token", "failover", "end", "error"]
        assert caps["policy"] == {
            "name": "default.star",
            "sha256": hashlib.sha256(builtin_source().encode()).hexdigest(),
        }
        # The limits are the ones requests are held to: at the limit accepted, past it refused.
        limits = caps["limits"]
        at = {**TASK, "max_tokens": limits["max_tokens"], "stop": ["s"] * limits["stop"]}
        assert c.post("/v2/tasks", json=at, headers=key).status_code == 202
        past = {**at, "max_tokens": limits["max_tokens"] + 1, "stop": ["s"] * (limits["stop"] + 1)}
        r = c.post("/v2/tasks", json=past, headers=key)
        assert r.status_code == 400
        assert {e["field"] for e in r.json()["errors"]} == {"max_tokens", "stop"}

        # Models: those of a live (ready) worker; a loading or removed one does not count.
        # (Not "m": the task above stays queued.)
        for wid, model in (("w1", "m1"), ("w2", "m2")):
            reg = {"worker_id": wid, "url": "http://127.0.0.1:9", "model": model, "slots_total": 1}
            assert c.post("/v2/workers/register", json=reg, headers=CT).status_code == 201
        beat = {"state": "loading", "slots_total": 1, "slots_busy": 0}
        assert c.post("/v2/workers/w2/heartbeat", json=beat, headers=CT).status_code == 200
        assert c.get("/v2/meta/capabilities", headers=key).json()["models"] == ["m1"]

        # /health and /metrics need no credentials.
        health = c.get("/health")
        assert health.status_code == 200
        assert health.json() == {
            "status": "ok",
            "queue_depth": {"interactive": 1, "batch": 0},
            "workers": {"ready": 1, "loading": 1},
        }
        assert c.get("/metrics").status_code == 200
        assert c.delete("/v2/workers/w1", headers=CT).status_code == 204
        assert c.get("/v2/meta/capabilities", headers=key).json()["models"] == []
        assert c.get("/health").json()["workers"] == {"loading": 1}


def test_admin_policy_reload_is_validated(orchd: AppFactory) -> None:
    """ORCH-090, ORCH-030: an invalid policy is 400 and the running one stays; a valid one is
    installed, and its admit() rejection is 429 ADMISSION_REJECT with its reason and Retry-After.
    (POL-031)"""
    admin = {"authorization": "Bearer at"}
    with orchd(cluster_token="ct", admin_token="at") as c:
        before = c.get("/v2/meta/capabilities").json()["policy"]
        r = c.post("/v2/admin/policy", headers=admin, json={"source": "def schedule(:"})
        assert r.status_code == 400 and r.json()["code"] == "INVALID_PARAMS"
        assert c.get("/v2/meta/capabilities").json()["policy"] == before
        src = (
            "def admit(task, cluster):\n"
            "    return {'accept': False, 'reason': 'closed', 'retry_after_ms': 3000}\n"
        )
        r = c.post("/v2/admin/policy", headers=admin, json={"source": src, "name": "closed"})
        assert r.status_code == 200 and r.json()["defines"] == ["admit"]
        assert c.get("/v2/meta/capabilities").json()["policy"]["sha256"] != before["sha256"]
        r = c.post("/v2/tasks", json=TASK)
        assert r.status_code == 429 and r.json()["code"] == "ADMISSION_REJECT"
        assert r.json()["detail"] == "closed" and r.headers["retry-after"] == "3"
        assert c.post("/v2/admin/policy", json={}).status_code == 401


def test_metrics_expose_every_family(orchd: AppFactory) -> None:
    with orchd() as c:
        text = c.get("/metrics").text
    for family in (
        "llorch_orchestrator_queue_depth",
        "llorch_orchestrator_tasks_total",
        "llorch_orchestrator_ttft_seconds",
        "llorch_orchestrator_queue_seconds",
        "llorch_orchestrator_time_per_output_token_seconds",
        "llorch_orchestrator_tokens_out_total",
        "llorch_orchestrator_workers",
        "llorch_orchestrator_policy_eval_seconds",
        "llorch_orchestrator_policy_fallbacks_total",
        "llorch_orchestrator_dispatch_retries_total",
    ):
        assert f"# TYPE {family} " in text, family
    assert 'llorch_orchestrator_tasks_total{code="OK"} 0.0' in text
    # ORCH-070: one prefix, and no `_created` series.
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names and all(n.startswith("llorch_orchestrator_") for n in names), names
    assert "_created" not in text
    assert 'llorch_orchestrator_policy_fallbacks_total{fn="schedule",reason="error"} 0.0' in text


def test_unreachable_worker_exhausts_retries_then_waits_for_another(orchd: AppFactory) -> None:
    """ORCH-043, ORCH-052: a worker that refuses connections is marked failed and gets no more work;
    with no retries left the task ends WORKER_RESET retriable."""
    from tests.support import free_port

    ghost = {
        "worker_id": "ghost",
        "url": f"http://127.0.0.1:{free_port()}",
        "model": "m",
        "slots_total": 1,
    }
    with orchd(retry_attempts=0) as c:
        assert c.post("/v2/workers/register", json=ghost).status_code == 201
        tid = c.post("/v2/tasks", json=TASK).json()["task_id"]
        evs = events(c, tid)
        assert [e for _, e, _ in evs] == ["queued", "error"]
        assert '"WORKER_RESET"' in evs[-1][2] and '"retriable":true' in evs[-1][2]
        assert c.get(f"/v2/tasks/{tid}").json()["attempts"] == 1
        [w] = c.get("/v2/workers").json()["workers"]
        assert w["state"] == "failed" and w["slots_busy"] == 0  # no more work until it reports
    with orchd(retry_attempts=2) as c:
        assert c.post("/v2/workers/register", json=ghost).status_code == 201
        tid = c.post("/v2/tasks", json={**TASK, "deadline_ms": 1500}).json()["task_id"]
        evs = events(c, tid)
        # The failed worker is skipped; with no other worker the task waits for its deadline.
        assert [e for _, e, _ in evs] == ["queued", "error"] and "DEADLINE_UNMET" in evs[-1][2]
        assert c.get(f"/v2/tasks/{tid}").json()["attempts"] == 1
        assert "llorch_orchestrator_dispatch_retries_total 1.0" in c.get("/metrics").text


XSS = "<img src=x onerror=alert(1)>"


def _fields(r: Any) -> set[str]:
    assert r.status_code == 400, r.text
    errors = r.json()["errors"]
    # The message says what a name must be, not what it was.
    assert all(XSS not in e["message"] for e in errors), errors
    return {e["field"] for e in errors}


def test_orch_045_names_outside_their_charset_are_400_naming_the_field(
    orchd: AppFactory,
) -> None:
    """ORCH-045: a worker id, pool or model name outside its charset is 400 INVALID_PARAMS
    naming the field: at registration, in a heartbeat's path, as a task's model on /v2 and
    /v1 (chat, embeddings), as a compare target; nothing of it is registered or queued."""
    with orchd(cluster_token="ct", expect_models=()) as c:
        reg = {"worker_id": XSS, "url": "http://127.0.0.1:9", "model": XSS, "pool": XSS}
        r = c.post("/v2/workers/register", headers=CT, json={**reg, "slots_total": 1})
        assert _fields(r) == {"worker_id", "model", "pool"}
        assert r.json()["code"] == "INVALID_PARAMS"
        for name in ("w1\n", "-w", "a/b", "x" * 129):
            r = c.post(
                "/v2/workers/register",
                headers=CT,
                json={**reg, "worker_id": name, "model": "m", "pool": "p", "slots_total": 1},
            )
            assert _fields(r) == {"worker_id"}, name
        assert c.get("/v2/workers", headers=CT).json()["workers"] == []
        r = c.post(
            f"/v2/workers/{XSS}/heartbeat",
            headers=CT,
            json={"state": "ready", "slots_total": 1, "slots_busy": 0},
        )
        assert _fields(r) == {"worker_id"}
        assert _fields(c.post("/v2/tasks", json={**TASK, "model": XSS})) == {"model"}
        body = {"model": XSS, "messages": [{"role": "user", "content": "hi"}]}
        r = c.post("/v1/chat/completions", json=body)
        assert _fields(r) == {"model"} and r.json()["error"]["type"] == "invalid_request_error"
        assert _fields(c.post("/v1/embeddings", json={"model": XSS, "input": "hi"})) == {"model"}
        assert _fields(c.post("/v1/responses", json={"model": XSS, "input": "hi"})) == {"model"}
        r = c.post("/v2/compare", json={**TASK, "targets": [f"worker:{XSS}", "pool:p"]})
        assert _fields(r) == {"targets"}
        assert c.get("/v2/tasks").json()["tasks"] == []


def test_orch_045_real_names_register_and_take_tasks(orchd: AppFactory) -> None:
    """ORCH-045: the names real deployments use pass: llorch-pool's HOST-PORT worker ids, a
    host name as the pool, a catalog id or a Hugging Face reference as the model."""
    with orchd(cluster_token="ct", expect_models=()) as c:
        models = ["smollm2-135m-instruct.q4_1", "bartowski/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M"]
        for i, model in enumerate(models):
            reg = {
                "worker_id": f"gpu-box-1.lan-800{i}",
                "url": f"http://127.0.0.1:{9 + i}",
                "model": model,
                "pool": "gpu-box-1.lan",
                "slots_total": 1,
            }
            assert c.post("/v2/workers/register", headers=CT, json=reg).status_code == 201
        r = c.post("/v2/workers/gpu-box-1.lan-8000/heartbeat", headers=CT, json={"slots_total": 1})
        assert r.status_code == 200
        assert sorted(c.get("/v2/meta/capabilities").json()["models"]) == sorted(models)
        r = c.post("/v2/tasks", json={**TASK, "model": models[1], "deadline_ms": 1})
        assert r.status_code == 202, r.text


def test_orch_240_a_compare_job_takes_the_constraint_fields(orchd: AppFactory) -> None:
    """ORCH-240: a /v2/compare job is a task body: the constraint and logprobs fields are read
    (a bad one is named), not refused as unknown."""
    with orchd() as c:
        r = c.post(
            "/v2/compare",
            json={**TASK, "targets": ["pool:a", "pool:b"], "json_schema": [], "logprobs": True},
        )
    assert r.status_code == 400
    problems = {e["field"]: e["message"] for e in r.json()["errors"]}
    assert set(problems) == {"json_schema"} and problems["json_schema"] != "unknown field"
