"""Per-tenant limits and usage, the pure part (orchestratord/domain/quotas.py) and the store:
windows and budgets on an injected clock (ORCH-320..ORCH-326)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from orchestratord.domain.quotas import (
    DAY_MS,
    HOUR_MS,
    MIN_SWEEP,
    Limits,
    Quotas,
    UsageBook,
    parse_limits,
    summarize,
)
from orchestratord.domain.tasks import parse_task_request
from orchestratord.domain.tenancy import Caller
from orchestratord.metrics import OTHER_TENANTS, Metrics
from orchestratord.runtime.tenants import TenantAccounts
from orchestratord.settings import Settings
from orchestratord.store.db import Store
from shared.problem import BudgetExhausted, InvalidParams, RateLimited

# 2026-01-31 23:59:00 UTC: a day and a month end a minute later.
T0 = int(dt.datetime(2026, 1, 31, 23, 59, tzinfo=dt.UTC).timestamp()) * 1000


def refusal(q: Quotas, now: int, prompt: int = 1) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        q.check("acme", prompt, now)
    return caught.value


def test_orch_322_rpm_window_is_fixed_from_the_first_request() -> None:
    """ORCH-322: the window opens at the first request and lasts window_ms; Retry-After is
    what is left of it."""
    q = Quotas(window_ms=10_000)
    q.set("acme", Limits(rpm=2))
    for t in (0, 1000):
        q.check("acme", 1, T0 + t)
        q.admitted("acme", 1, T0 + t)
    err = refusal(q, T0 + 4000)
    assert (err.limit, err.tenant, err.retry_after_ms) == ("rpm", "acme", 6000)
    q.check("acme", 1, T0 + 10_000)  # a new window


def test_orch_322_tpm_counts_the_estimate_then_the_workers_count_and_completion() -> None:
    """ORCH-322: the prompt estimate counts at admission; at the end the worker's count
    replaces it and the completion tokens are added; a fresh window lets one task in."""
    q = Quotas(window_ms=60_000)
    q.set("acme", Limits(tpm=100))
    q.check("acme", 500, T0)  # a fresh window: even a prompt over the whole limit
    window = q.admitted("acme", 40, T0)
    q.finished("acme", window, 40, 30, 50, T0 + 10)  # 30 prompt (not 40) + 50 completion
    assert q.accounts["acme"].tokens == 80
    q.check("acme", 20, T0 + 20)
    assert refusal(q, T0 + 20, prompt=21).limit == "tpm"


def test_orch_320_concurrency_counts_open_tasks() -> None:
    q = Quotas()
    q.set("acme", Limits(concurrency=1))
    window = q.admitted("acme", 1, T0)
    err = refusal(q, T0)
    assert (err.limit, err.retry_after_ms) == ("concurrency", 1000)
    q.finished("acme", window, 1, 1, 1, T0 + 5)
    q.check("acme", 1, T0 + 5)


def test_orch_321_budgets_renew_at_the_utc_day_and_month() -> None:
    """ORCH-321: a spent daily budget refuses until 00:00 UTC, a monthly one until the 1st;
    both with BUDGET_EXHAUSTED and the time left as Retry-After."""
    q = Quotas()
    q.set("acme", Limits(daily_tokens=10, monthly_tokens=1000))
    q.finished("acme", q.admitted("acme", 1, T0), 1, 4, 8, T0)
    err = refusal(q, T0 + 1000)
    assert isinstance(err, BudgetExhausted)
    assert (err.code, err.limit, err.retry_after_ms) == ("BUDGET_EXHAUSTED", "daily_tokens", 59_000)
    q.check("acme", 1, T0 + 60_000)  # February 1st: a new day and a new month
    q.set("acme", Limits(monthly_tokens=10))
    q.restore([("acme", 0, 10)], T0 + 60_000)  # spent this month, as the store says
    err = refusal(q, T0 + DAY_MS)
    assert err.limit == "monthly_tokens"
    march = int(dt.datetime(2026, 3, 1, tzinfo=dt.UTC).timestamp()) * 1000
    assert err.retry_after_ms == march - (T0 + DAY_MS)


def test_orch_323_325_limits_are_validated_field_by_field_and_weights_read_in_memory() -> None:
    """ORCH-323: each bad field is named; ORCH-325: the weight is an in-memory read."""
    assert parse_limits({"rpm": 5, "tpm": None, "weight": 2}) == Limits(rpm=5, weight=2.0)
    with pytest.raises(InvalidParams) as caught:
        parse_limits({"rpm": -1, "tpm": "5", "weight": 0, "burst": 1})
    assert {e["field"] for e in caught.value.errors} == {"rpm", "tpm", "weight", "burst"}
    q = Quotas()
    q.set("acme", Limits(weight=3.0))
    assert (q.weight("acme"), q.weight("beta"), q.weight(None)) == (3.0, 1.0, 1.0)


def test_orch_326_usage_book_and_store_add_up(store: Store) -> None:
    """ORCH-326, ORCH-342: the book aggregates by hour, tenant, key and model; the store adds
    batches to its hourly rows (on SQLite and PostgreSQL), and reads back the tokens a budget
    has spent; limits round-trip."""
    book = UsageBook()
    book.add(T0, "acme", None, "m", 5, 1, 7, False)
    book.add(T0 + 10, "acme", None, "m", 3, 0, 2, True)
    book.add(T0 + HOUR_MS, "beta", "k1", "n", 1, 0, 1, False)
    store.add_usage(book.take().items())
    book.add(T0 + 20, "acme", None, "m", 1, 0, 1, False)
    store.add_usage(book.take().items())
    rows = store.usage(0, 2**62, None, False)
    by_tenant = summarize(rows, "tenant")
    assert by_tenant[0] == {
        "tenant": "acme",
        "prompt_tokens": 9,
        "cached_tokens": 1,
        "completion_tokens": 10,
        "tasks": 3,
        "errors": 1,
        "total_tokens": 19,
    }
    assert [r["key"] for r in summarize(store.usage(0, 2**62, "beta", True), "key")] == ["k1"]
    day = (T0 + HOUR_MS) // DAY_MS * DAY_MS
    month = int(dt.datetime(2026, 1, 1, tzinfo=dt.UTC).timestamp()) * 1000
    assert sorted(store.spent(day, month), key=str) == [("acme", 0, 19), ("beta", 2, 2)]
    row = {"concurrency": 2, "rpm": None, "tpm": 9, "daily_tokens": None}
    store.save_limits("acme", {**row, "monthly_tokens": 10**12, "weight": 3.0, "updated_ms": 1})
    store.save_limits("acme", {**row, "monthly_tokens": 10**12, "weight": 2.0, "updated_ms": 2})
    (saved,) = store.load_limits()
    assert saved["tenant"] == "acme" and saved["monthly_tokens"] == 10**12
    assert (saved["weight"], saved["updated_ms"]) == (2.0, 2)


def test_orch_328_tenant_labels_are_capped() -> None:
    """ORCH-328: beyond --metrics-tenant-labels distinct tenants, the label is `other`."""
    m = Metrics(tenant_labels=2)
    for tenant in ("a", "b", "c", None, "d", "a"):
        m.tenant_usage(tenant, 1, 0, 2, False)
    text = m.render({}, {}).decode()
    labels = {
        line.split('tenant="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("llorch_orchestrator_tenant_tasks_total{")
    }
    assert labels == {"a", "b", OTHER_TENANTS, ""}
    assert 'llorch_orchestrator_tenant_tasks_total{outcome="ok",tenant="other"} 2.0' in text


LATE = Caller("late")
# 2026-01-15 12:00 UTC: far from a day's or a month's end.
MID = int(dt.datetime(2026, 1, 15, 12, tzinfo=dt.UTC).timestamp()) * 1000


def test_orch_411_idle_accounts_are_dropped_and_what_limits_need_is_kept() -> None:
    """ORCH-411: 20,000 tenants, one task each, 100 ms apart: the accounts stay bounded by
    those active in the last window (they grew with every tenant ever seen), while a tenant
    with a task open, one with its rate window open and one whose daily budget is spent keep
    theirs, so no limit is bypassed by waiting for the accounts to be swept."""
    q = Quotas(window_ms=60_000)
    q.set("budgeted", Limits(daily_tokens=100))
    q.set("busy", Limits(concurrency=1))
    q.set("rated", Limits(rpm=1))
    q.finished("budgeted", q.admitted("budgeted", 1, MID), 1, 60, 40, MID)  # its 100 tokens
    q.check("busy", 1, MID)
    busy_window = q.admitted("busy", 1, MID)  # open until the end
    step, n = 100, 20_000
    most = 0
    for i in range(n):
        now = MID + i * step
        tenant = f"t{i}"
        q.finished(tenant, q.admitted(tenant, 2, now), 2, 2, 3, now)
        most = max(most, len(q.accounts))
    per_window = 60_000 // step
    assert most <= 2 * (per_window + 2) + MIN_SWEEP  # not n
    assert {"budgeted", "busy"} <= set(q.accounts)
    now = MID + n * step
    with pytest.raises(BudgetExhausted):
        q.check("budgeted", 1, now)
    assert refusal_of(q, "busy", now).limit == "concurrency"
    q.finished("busy", busy_window, 1, 1, 0, now)
    q.check("busy", 1, now)
    # "rated" spends its one request of a window; sweeps in that window keep its account.
    q.check("rated", 1, now)
    q.finished("rated", q.admitted("rated", 1, now), 1, 1, 0, now)
    for i in range(4 * MIN_SWEEP):
        q.finished(f"u{i}", q.admitted(f"u{i}", 2, now + 1), 2, 2, 3, now + 1)
    assert "rated" in q.accounts
    assert refusal_of(q, "rated", now + 2).limit == "rpm"
    q.check("rated", 1, now + 60_000)  # its next window


def refusal_of(q: Quotas, tenant: str, now: int) -> RateLimited:
    with pytest.raises(RateLimited) as caught:
        q.check(tenant, 1, now)
    return caught.value


@pytest.mark.anyio
async def test_orch_411_a_budget_set_later_counts_tokens_of_a_dropped_account(
    store: Store, tmp_path: Path
) -> None:
    """ORCH-411, ORCH-323: a tenant without limits spends, its account is swept while idle and
    made again; a daily budget put then counts the day's tokens spent before, from the usage
    table (written) and the book (not written yet), and refuses."""
    clock = [MID]
    accounts = TenantAccounts(Settings(state_dir=tmp_path), Metrics(), store, lambda: clock[0])
    q = accounts.quotas

    def spend(tokens: int) -> None:
        now = clock[0]
        q.finished("late", q.admitted("late", 1, now), 1, tokens, 0, now)
        accounts.book.add(now, "late", None, "m", tokens, 0, 0, False)

    spend(80)
    await accounts.flush()
    spend(15)
    clock[0] += 61_000
    assert q.sweep(clock[0]) == 1 and "late" not in q.accounts
    spend(5)
    assert q.accounts["late"].day_tokens == 5  # all a fresh account knows
    view = await accounts.set_limits("late", Limits(daily_tokens=100))
    assert view["usage"]["tokens_today"] == 100
    with pytest.raises(BudgetExhausted):
        accounts.check(parse_task_request({"model": "m", "prompt": "hi"}, caller=LATE), 1, clock[0])
