"""Per-tenant limits and usage, in memory; pure (the clock comes in as `now_ms`).

`Quotas` decides at submit, before a task takes a place in the queue (ORCH-320): a tenant's
open tasks (queued or running) against `concurrency`, its requests and tokens in the current
window against `rpm` and `tpm`, its tokens of the UTC day and month against `daily_tokens` and
`monthly_tokens`. Nothing here reads the database: the runtime loads the limits and the
tokens already spent once at start-up (runtime/tenants.py) and writes changes in batches.

The rate window is fixed, not sliding (ORCH-322): it opens at a tenant's first request after
the last window closed and lasts `window_ms` (60 s, `--limits-window-s`). Prompt tokens are
estimated at admission (chars / 4) and counted in the window then; at the task's end the
worker's count replaces the estimate (when the window is still the one it was admitted in)
and the completion tokens are added to the window open then. Budgets count what the `end`
events say (prompt + completion tokens), when they say it: a task running when the budget
runs out finishes.

`UsageBook` aggregates the same `end` events by hour, tenant, key and model (ORCH-326) until
the runtime takes the batch to write it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

from shared.problem import BudgetExhausted, FieldError, InvalidParams, RateLimited

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
LIMIT_FIELDS = ("concurrency", "rpm", "tpm", "daily_tokens", "monthly_tokens")
MAX_LIMIT = 2**53  # exact in JSON numbers and in every database's BIGINT
MAX_WEIGHT = 1e6
# Accounts are swept for idle ones when they reach this many, then each time they double.
MIN_SWEEP = 1024
# Retry-After for a tenant at its concurrency cap: a task of its own has to end first, and
# nothing says when; a client that retries after a second finds out.
CONCURRENCY_RETRY_MS = 1000


@dataclass(frozen=True, slots=True)
class Limits:
    """One tenant's limits; None is no limit. `weight` is its share in fair queueing."""

    concurrency: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    daily_tokens: int | None = None
    monthly_tokens: int | None = None
    weight: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


NO_LIMITS = Limits()


def parse_limits(body: object) -> Limits:
    """The body of `PUT /v2/admin/tenants/{tenant}/limits`: every field optional, a limit a
    non-negative integer or null; raises InvalidParams naming each bad field."""
    if not isinstance(body, Mapping):
        raise InvalidParams(
            "the body must be a JSON object of limits",
            errors=[{"field": "body", "message": "expected an object"}],
        )
    errors: list[FieldError] = [
        {"field": str(k), "message": "unknown field"}
        for k in body
        if k not in (*LIMIT_FIELDS, "weight")
    ]
    values: dict[str, Any] = {}
    for name in LIMIT_FIELDS:
        v = body.get(name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= MAX_LIMIT:
            errors.append({"field": name, "message": "must be an integer >= 0, or null"})
        else:
            values[name] = v
    weight = body.get("weight", 1.0)
    if weight is None:
        weight = 1.0
    if (
        isinstance(weight, bool)
        or not isinstance(weight, int | float)
        or not 0 < weight <= MAX_WEIGHT
        or math.isnan(weight)
    ):
        errors.append(
            {"field": "weight", "message": f"must be a number > 0, at most {MAX_WEIGHT:g}"}
        )
    else:
        values["weight"] = float(weight)
    if errors:
        raise InvalidParams(
            "invalid limits: " + "; ".join(e["field"] for e in errors), errors=errors
        )
    return Limits(**values)


def month_of(day: int) -> int:
    """The month (years * 12 + month - 1) of a UTC day number."""
    d = dt.date(1970, 1, 1) + dt.timedelta(days=day)
    return d.year * 12 + d.month - 1


def month_start_ms(month: int) -> int:
    year, m = divmod(month, 12)
    start = dt.datetime(year, m + 1, 1, tzinfo=dt.UTC)
    return int(start.timestamp()) * 1000


@dataclass(slots=True)
class Account:
    """What one tenant has used: open tasks, the rate window, the day's and month's tokens."""

    open: int = 0
    window_start: int = -(2**62)
    requests: int = 0
    tokens: int = 0
    day: int = -1
    month: int = -1
    day_tokens: int = 0
    month_tokens: int = 0


class Quotas:
    """The limits of every tenant and what each used; see the module docstring."""

    def __init__(self, window_ms: int = 60_000) -> None:
        self.window_ms = window_ms
        self.limits: dict[str, Limits] = {}
        self._limits_json: dict[str, dict[str, Any]] = {}
        self.accounts: dict[str | None, Account] = {}
        self._sweep_at = MIN_SWEEP

    def set(self, tenant: str, limits: Limits | None) -> None:
        if limits is None or limits == NO_LIMITS:
            self.limits.pop(tenant, None)
            self._limits_json.pop(tenant, None)
        else:
            self.limits[tenant] = limits
            self._limits_json[tenant] = limits.to_json()

    def weight(self, tenant: str | None) -> float:
        """The tenant's weight in fair queueing (1.0 unless set): one dict lookup."""
        limits = self.limits.get(tenant) if tenant is not None else None
        return 1.0 if limits is None else limits.weight

    def account(self, tenant: str | None, now_ms: int) -> Account:
        """The tenant's account, its window and its day and month brought up to `now_ms`."""
        acct = self.accounts.get(tenant)
        if acct is None:
            if len(self.accounts) >= self._sweep_at:
                self.sweep(now_ms)
            acct = self.accounts[tenant] = Account()
        if now_ms - acct.window_start >= self.window_ms:
            acct.window_start, acct.requests, acct.tokens = now_ms, 0, 0
        day = now_ms // DAY_MS
        if day != acct.day:
            month = month_of(day)
            if month != acct.month:
                acct.month, acct.month_tokens = month, 0
            acct.day, acct.day_tokens = day, 0
        return acct

    def sweep(self, now_ms: int) -> int:
        """Drop the accounts that hold nothing a limit still needs (ORCH-411); how many went.
        Run when the accounts have doubled since the last sweep: O(1) per account made."""
        day = now_ms // DAY_MS
        month = month_of(day)
        gone = [t for t, a in self.accounts.items() if self._idle(t, a, now_ms, day, month)]
        for tenant in gone:
            del self.accounts[tenant]
        self._sweep_at = max(MIN_SWEEP, 2 * len(self.accounts))
        return len(gone)

    def _idle(self, tenant: str | None, a: Account, now_ms: int, day: int, month: int) -> bool:
        """Whether a fresh account would do as well: no task open, the rate window closed (a
        new one would open anyway), and no tokens a budget of the tenant counts now."""
        if a.open or now_ms - a.window_start < self.window_ms:
            return False
        limits = self.limits.get(tenant) if tenant is not None else None
        if limits is None:
            return True
        if limits.daily_tokens is not None and a.day == day and a.day_tokens:
            return False
        return not (limits.monthly_tokens is not None and a.month == month and a.month_tokens)

    def rebuild_spent(self, tenant: str, today: int, month: int, now_ms: int) -> None:
        """Set the tenant's tokens of the UTC day and month to what the usage says (ORCH-411):
        an account dropped while the tenant had no budget counted only what came after."""
        acct = self.account(tenant, now_ms)
        acct.day_tokens, acct.month_tokens = today, month

    def check(self, tenant: str | None, prompt_tokens: int, now_ms: int) -> None:
        """Raise BudgetExhausted or RateLimited when a task of `tenant` with about
        `prompt_tokens` would cross one of its limits now (ORCH-320, ORCH-321)."""
        limits = self.limits.get(tenant) if tenant is not None else None
        if limits is None:
            return
        assert tenant is not None
        acct = self.account(tenant, now_ms)
        if limits.monthly_tokens is not None and acct.month_tokens >= limits.monthly_tokens:
            retry = month_start_ms(acct.month + 1) - now_ms
            raise BudgetExhausted(
                f"tenant {tenant} spent its monthly budget ({acct.month_tokens} of "
                f"{limits.monthly_tokens} tokens); it renews at the start of the next UTC month",
                limit="monthly_tokens",
                tenant=tenant,
                retry_after_ms=retry,
            )
        if limits.daily_tokens is not None and acct.day_tokens >= limits.daily_tokens:
            retry = (acct.day + 1) * DAY_MS - now_ms
            raise BudgetExhausted(
                f"tenant {tenant} spent its daily budget ({acct.day_tokens} of "
                f"{limits.daily_tokens} tokens); it renews at 00:00 UTC",
                limit="daily_tokens",
                tenant=tenant,
                retry_after_ms=retry,
            )
        if limits.concurrency is not None and acct.open >= limits.concurrency:
            raise RateLimited(
                f"tenant {tenant} has {acct.open} tasks queued or running, its limit "
                f"(concurrency {limits.concurrency})",
                limit="concurrency",
                tenant=tenant,
                retry_after_ms=CONCURRENCY_RETRY_MS,
            )
        retry = acct.window_start + self.window_ms - now_ms
        if limits.rpm is not None and acct.requests >= limits.rpm:
            raise RateLimited(
                f"tenant {tenant} sent {acct.requests} requests in this window, its limit "
                f"(rpm {limits.rpm})",
                limit="rpm",
                tenant=tenant,
                retry_after_ms=retry,
            )
        # A fresh window always lets one task in, however long its prompt: a prompt larger
        # than the whole limit would otherwise never run.
        if limits.tpm is not None and acct.tokens > 0 and acct.tokens + prompt_tokens > limits.tpm:
            raise RateLimited(
                f"tenant {tenant} used {acct.tokens} tokens in this window; this task's prompt "
                f"(about {prompt_tokens}) would cross its limit (tpm {limits.tpm})",
                limit="tpm",
                tenant=tenant,
                retry_after_ms=retry,
            )

    def admitted(self, tenant: str | None, prompt_tokens: int, now_ms: int) -> int:
        """Count a task queued; returns its window's start, for `finished`."""
        acct = self.account(tenant, now_ms)
        acct.open += 1
        acct.requests += 1
        acct.tokens += prompt_tokens
        return acct.window_start

    def finished(
        self,
        tenant: str | None,
        admitted_window: int,
        estimate: int,
        prompt_tokens: int,
        completion_tokens: int,
        now_ms: int,
    ) -> None:
        """Count a task ended with these tokens (its `end` event's)."""
        acct = self.account(tenant, now_ms)
        acct.open = max(0, acct.open - 1)
        used = completion_tokens
        if acct.window_start == admitted_window:  # the estimate counted here: correct it
            used += prompt_tokens - estimate
        acct.tokens = max(0, acct.tokens + used)
        self.spend(acct, prompt_tokens + completion_tokens)

    @staticmethod
    def spend(acct: Account, tokens: int) -> None:
        acct.day_tokens += tokens
        acct.month_tokens += tokens

    def restore(self, spent: Iterable[tuple[str | None, int, int]], now_ms: int) -> None:
        """At start-up: (tenant, tokens today, tokens this month) from the usage table."""
        for tenant, today, month in spent:
            acct = self.account(tenant, now_ms)
            acct.day_tokens += today
            acct.month_tokens += month

    def view(self, tenant: str | None, now_ms: int) -> tuple[dict[str, Any] | None, TenantUsage]:
        """What a policy sees of the task's tenant (POL-100): its limits (None: none set) and
        its usage now."""
        limits = self._limits_json.get(tenant) if tenant is not None else None
        acct = self.accounts.get(tenant)
        if acct is None:
            return limits, {**EMPTY_USAGE, "window_s": self.window_ms / 1000}
        self.account(tenant, now_ms)
        return limits, {
            "open": acct.open,
            "requests": acct.requests,
            "tokens": acct.tokens,
            "window_s": self.window_ms / 1000,
            "tokens_today": acct.day_tokens,
            "tokens_month": acct.month_tokens,
        }


TenantUsage = dict[str, int | float]
EMPTY_USAGE: TenantUsage = {
    "open": 0,
    "requests": 0,
    "tokens": 0,
    "window_s": 60.0,
    "tokens_today": 0,
    "tokens_month": 0,
}


# --- usage aggregates ---------------------------------------------------------------------

# (hour_ms, tenant, key_id, model) -> [prompt, cached, completion, tasks, errors]
UsageKey = tuple[int, str | None, str | None, str]
COUNTS = ("prompt_tokens", "cached_tokens", "completion_tokens", "tasks", "errors")
UsageBy = Literal["tenant", "model", "key", "hour"]
USAGE_BY: tuple[UsageBy, ...] = ("tenant", "model", "key", "hour")


class UsageBook:
    """Usage counted since the last batch was taken (ORCH-326): one dict entry per hour,
    tenant, key and model, however many tasks end."""

    def __init__(self) -> None:
        self.pending: dict[UsageKey, list[int]] = {}

    def add(
        self,
        now_ms: int,
        tenant: str | None,
        key_id: str | None,
        model: str,
        prompt: int,
        cached: int,
        completion: int,
        error: bool,
    ) -> None:
        key = (now_ms - now_ms % HOUR_MS, tenant, key_id, model)
        row = self.pending.get(key)
        if row is None:
            self.pending[key] = [prompt, cached, completion, 1, int(error)]
        else:
            row[0] += prompt
            row[1] += cached
            row[2] += completion
            row[3] += 1
            row[4] += error

    def spent(self, tenant: str, day_ms: int, month_ms: int) -> tuple[int, int]:
        """The tenant's tokens not written yet, since `day_ms` and since `month_ms`: prompt and
        completion, as its budgets count them (ORCH-322)."""
        today = month = 0
        for (hour_ms, t, _, _), row in self.pending.items():
            if t == tenant and hour_ms >= month_ms:
                month += row[0] + row[2]
                today += row[0] + row[2] if hour_ms >= day_ms else 0
        return today, month

    def take(self) -> dict[UsageKey, list[int]]:
        batch, self.pending = self.pending, {}
        return batch

    def put_back(self, batch: Mapping[UsageKey, list[int]]) -> None:
        """A batch whose write failed: added to what came since, to be written next time."""
        for key, counts in batch.items():
            row = self.pending.get(key)
            if row is None:
                self.pending[key] = list(counts)
            else:
                for i, n in enumerate(counts):
                    row[i] += n


def summarize(rows: Iterable[tuple[UsageKey, Iterable[int]]], by: UsageBy) -> list[dict[str, Any]]:
    """Usage rows grouped by one dimension, each with its totals; largest total first (by
    hour: oldest first)."""
    index = {"hour": 0, "tenant": 1, "key": 2, "model": 3}[by]
    groups: dict[Any, list[int]] = {}
    for key, counts in rows:
        group = groups.setdefault(key[index], [0, 0, 0, 0, 0])
        for i, n in enumerate(counts):
            group[i] += n
    out = [
        {
            "hour_ms" if by == "hour" else by: value,
            **dict(zip(COUNTS, counts, strict=True)),
            "total_tokens": counts[0] + counts[2],
        }
        for value, counts in groups.items()
    ]
    if by == "hour":
        out.sort(key=lambda r: r["hour_ms"])
    else:
        out.sort(key=lambda r: (-r["total_tokens"], str(r[by])))
    return out
