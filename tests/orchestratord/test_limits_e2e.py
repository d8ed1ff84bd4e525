"""Per-tenant limits and usage end to end (issue 22, items 2 and 4): a real orchestratord and
a real llorch-workerd on the tiny model, on loopback, with SQLite (ORCH-320..ORCH-328)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.orchestratord.cluster import (
    ADMIN,
    MODEL,
    orchestratord,
    read_events,
    worker,
)
from tests.support import Proc

ACME = {"authorization": "Bearer k-acme"}
BETA = {"authorization": "Bearer k-beta"}
KEYS = ("--api-key", "acme:k-acme", "--api-key", "beta:k-beta")
WINDOW_S = "2"


@contextlib.contextmanager
def cluster(tmp: Path, model: Path, *extra: str) -> Iterator[Proc]:
    with (
        orchestratord(tmp, *KEYS, "--limits-window-s", WINDOW_S, *extra) as orch,
        worker(model, tmp, orch.url, "w-1", slots=4),
    ):
        yield orch


def put_limits(url: str, tenant: str, **limits: Any) -> dict[str, Any]:
    r = httpx.put(f"{url}/v2/admin/tenants/{tenant}/limits", json=limits, headers=ADMIN)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def submit(url: str, headers: dict[str, str], max_tokens: int = 2) -> httpx.Response:
    body = {"model": MODEL, "prompt": "hello", "max_tokens": max_tokens, "ignore_eos": True}
    return httpx.post(url + "/v2/tasks", json=body, headers=headers, timeout=30)


def run(url: str, headers: dict[str, str], max_tokens: int = 2, prompt: str = "hello") -> Any:
    """Run a task to its end over the stream; returns its `end` event's data."""
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True}
    with httpx.stream(
        "POST",
        url + "/v2/tasks",
        json=body,
        headers={**headers, "accept": "text/event-stream"},
        timeout=60,
    ) as r:
        assert r.status_code == 200, r.read()
        events = read_events(r.iter_lines())
    assert events[-1].event == "end", events[-1]
    return events[-1].data


def refused(r: httpx.Response, limit: str, code: str = "RATE_LIMITED") -> int:
    """Assert a 429 naming `limit` of acme; returns its Retry-After in seconds."""
    assert r.status_code == 429, r.text
    body = r.json()
    assert r.headers["content-type"].startswith("application/problem+json")
    assert (body["code"], body["limit"], body["tenant"]) == (code, limit, "acme")
    retry = int(r.headers["retry-after"])
    assert body["retry_after_s"] == retry >= 1
    return retry


def wait_until_done(url: str, task_id: str) -> None:
    for _ in range(600):
        status = httpx.get(f"{url}/v2/tasks/{task_id}", headers=ADMIN).json()["status"]
        if status in ("succeeded", "failed", "cancelled"):
            return
        time.sleep(0.05)
    raise TimeoutError(task_id)


def test_orch_320_321_322_rpm_refuses_the_request_that_crosses_it_then_lets_one_in(
    tmp_path: Path, tiny_model: Path
) -> None:
    """ORCH-320, ORCH-321, ORCH-322: the third request of a window with rpm 2 gets 429 with
    Retry-After naming `rpm` (on /v2 and, in OpenAI's shape, on /v1); after the window one is
    let in again. Another tenant is not limited."""
    with cluster(tmp_path, tiny_model) as orch:
        put_limits(orch.url, "acme", rpm=2)
        assert submit(orch.url, ACME).status_code == 202
        assert submit(orch.url, ACME).status_code == 202
        retry = refused(submit(orch.url, ACME), "rpm")
        assert retry <= int(WINDOW_S)
        assert submit(orch.url, BETA).status_code == 202  # beta has no limits
        client = openai.OpenAI(base_url=orch.url + "/v1", api_key="k-acme", max_retries=0)
        with pytest.raises(openai.RateLimitError) as caught:
            client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
        assert caught.value.code == "rate_limit_exceeded"
        assert caught.value.response.headers["retry-after"]
        time.sleep(retry)
        assert submit(orch.url, ACME).status_code == 202
        done = client.completions.create(model=MODEL, prompt="hi", max_tokens=2)
        assert done.usage is not None


def test_orch_320_concurrency_refuses_while_its_tasks_are_open(
    tmp_path: Path, tiny_model: Path
) -> None:
    """ORCH-320: with concurrency 1, a second task while the first is open is refused
    (`concurrency`); once the first ended, the next one is let in."""
    with cluster(tmp_path, tiny_model) as orch:
        put_limits(orch.url, "acme", concurrency=1)
        first = submit(orch.url, ACME, max_tokens=16000)
        assert first.status_code == 202
        refused(submit(orch.url, ACME), "concurrency")
        task_id = first.json()["task_id"]
        httpx.post(f"{orch.url}/v2/tasks/{task_id}/cancel", headers=ACME).raise_for_status()
        assert submit(orch.url, ACME).status_code == 202


def test_orch_320_322_tpm_counts_prompt_and_completion_tokens(
    tmp_path: Path, tiny_model: Path
) -> None:
    """ORCH-320, ORCH-322: with tpm 10, a task of 16 completion tokens fills the window; the
    next is refused (`tpm`) until the window is over."""
    with cluster(tmp_path, tiny_model) as orch:
        put_limits(orch.url, "acme", tpm=10)
        run(orch.url, ACME, max_tokens=16)
        retry = refused(submit(orch.url, ACME), "tpm")
        time.sleep(retry)
        assert submit(orch.url, ACME).status_code == 202


def test_orch_321_324_budgets_refuse_and_survive_a_restart(
    tmp_path: Path, tiny_model: Path
) -> None:
    """ORCH-321, ORCH-324: a spent daily budget is 429 BUDGET_EXHAUSTED naming
    `daily_tokens` (OpenAI's `insufficient_quota` on /v1), and so is a spent monthly one;
    orchestratord started again on the same database still refuses both. Raising the budget
    lets the next task in at once."""
    state = tmp_path / "state"
    with cluster(tmp_path, tiny_model, "--usage-flush-s", "3600") as orch:
        put_limits(orch.url, "acme", daily_tokens=10)
        put_limits(orch.url, "beta", monthly_tokens=10)
        run(orch.url, ACME, max_tokens=16)
        run(orch.url, BETA, max_tokens=16)
        retry = refused(submit(orch.url, ACME), "daily_tokens", "BUDGET_EXHAUSTED")
        assert retry <= 86_400
        r = submit(orch.url, BETA)
        assert (r.status_code, r.json()["limit"]) == (429, "monthly_tokens")
    # The flush interval is an hour: what the restart finds was written at shutdown.
    with cluster(tmp_path, tiny_model, "--state-dir", str(state)) as orch:
        refused(submit(orch.url, ACME), "daily_tokens", "BUDGET_EXHAUSTED")
        client = openai.OpenAI(base_url=orch.url + "/v1", api_key="k-acme", max_retries=0)
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        assert caught.value.code == "insufficient_quota"
        r = submit(orch.url, BETA)
        assert (r.status_code, r.json()["code"], r.json()["limit"]) == (
            429,
            "BUDGET_EXHAUSTED",
            "monthly_tokens",
        )
        limits = httpx.get(f"{orch.url}/v2/admin/tenants/acme/limits", headers=ADMIN).json()
        assert limits["limits"]["daily_tokens"] == 10
        assert limits["usage"]["tokens_today"] >= 16
        put_limits(orch.url, "acme", daily_tokens=10_000)
        assert submit(orch.url, ACME).status_code == 202


def test_orch_326_327_usage_is_the_sum_of_the_end_events_and_each_sees_its_own(
    tmp_path: Path, tiny_model: Path
) -> None:
    """ORCH-326, ORCH-327: GET /v2/usage totals equal the sums of the tasks' `end` events,
    by tenant and by model, before and after a restart; a client key sees only its tenant's
    usage and is refused another's."""
    ends: dict[str, list[Any]] = {"acme": [], "beta": []}
    state = tmp_path / "state"
    with cluster(tmp_path, tiny_model) as orch:
        for i, n in enumerate((3, 5, 7)):
            ends["acme"].append(run(orch.url, ACME, max_tokens=n, prompt="x " * (i + 1)))
        for n in (4, 6):
            ends["beta"].append(run(orch.url, BETA, max_tokens=n))
        before = httpx.get(f"{orch.url}/v2/usage?since=1h", headers=ADMIN).json()
        by_model = httpx.get(f"{orch.url}/v2/usage?by=model", headers=ADMIN).json()["usage"]
        own = httpx.get(f"{orch.url}/v2/usage", headers=ACME).json()["usage"]
        other = httpx.get(f"{orch.url}/v2/usage?tenant=beta", headers=ACME)
    rows = {r["tenant"]: r for r in before["usage"]}
    assert set(rows) == {"acme", "beta"}
    for tenant, events in ends.items():
        row = rows[tenant]
        assert row["completion_tokens"] == sum(e["tokens_out"] for e in events)
        assert row["prompt_tokens"] == sum(e["prompt_tokens"] for e in events)
        assert row["cached_tokens"] == sum(e.get("prompt_tokens_cached", 0) for e in events)
        assert row["tasks"] == len(events) and row["errors"] == 0
        assert row["total_tokens"] == row["prompt_tokens"] + row["completion_tokens"]
    everything = [e for events in ends.values() for e in events]
    assert [(r["model"], r["completion_tokens"], r["tasks"]) for r in by_model] == [
        (MODEL, sum(e["tokens_out"] for e in everything), 5)
    ]
    assert [r["tenant"] for r in own] == ["acme"] and own[0] == rows["acme"]
    assert other.status_code == 403
    with cluster(tmp_path, tiny_model, "--state-dir", str(state)) as orch:
        after = httpx.get(f"{orch.url}/v2/usage?since=1h&by=tenant", headers=ADMIN).json()
        key = httpx.get(f"{orch.url}/v2/usage?by=key", headers=BETA).json()["usage"]
    assert after["usage"] == before["usage"]
    # Flag keys have no id: beta's usage is under key null (ORCH-326).
    assert [(r["key"], r["tasks"]) for r in key] == [(None, 2)]


POLICY = """
def admit(task, cluster):
    limits = task["tenant_limits"]
    usage = task["tenant_usage"]
    if limits != None and usage["requests"] >= 2:
        return {"accept": False, "reason": "rpm %d, requests %d, today %d" % (
            limits["rpm"], usage["requests"], usage["tokens_today"])}
    return {"accept": True}
"""


def test_pol_100_the_policy_sees_the_tenants_limits_and_usage(
    tmp_path: Path, tiny_model: Path
) -> None:
    """POL-100: admit() reads task.tenant_limits and task.tenant_usage: a policy that refuses
    the third request of a tenant with limits says the numbers it saw."""
    policy = tmp_path / "p.star"
    policy.write_text(POLICY)
    with cluster(tmp_path, tiny_model, "--policy", str(policy)) as orch:
        put_limits(orch.url, "acme", rpm=50)
        # Long tasks: none ends (and spends tokens) while the test looks.
        long = [submit(orch.url, ACME, max_tokens=16000) for _ in range(2)]
        assert [r.status_code for r in long] == [202, 202]
        r = submit(orch.url, ACME)
        assert (r.status_code, r.json()["code"]) == (429, "ADMISSION_REJECT")
        assert r.json()["detail"] == "rpm 50, requests 2, today 0"
        for _ in range(3):  # beta has no limits: the policy lets it in
            assert submit(orch.url, BETA).status_code == 202
        for task in long:
            task_id = task.json()["task_id"]
            httpx.post(f"{orch.url}/v2/tasks/{task_id}/cancel", headers=ACME).raise_for_status()
            wait_until_done(orch.url, task_id)
