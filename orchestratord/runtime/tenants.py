"""Per-tenant limits and usage at run time: the in-memory `Quotas` and `UsageBook`
(domain/quotas.py) behind the submit path and the end of every task, loaded from the database
once at start-up and written back in batches (ORCH-320..ORCH-329).

On the hot path a task costs a few dictionary operations at submit (`check`, `admitted`) and
at its end (`closed`); the database is read at start-up and by `GET /v2/usage` only, off the
event loop, and written every `--usage-flush-s` seconds and at shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from orchestratord.domain.quotas import (
    DAY_MS,
    HOUR_MS,
    LIMIT_FIELDS,
    Limits,
    Quotas,
    TenantUsage,
    UsageBook,
    UsageBy,
    month_of,
    month_start_ms,
    summarize,
)
from orchestratord.domain.tasks import TaskRequest
from orchestratord.metrics import Metrics
from orchestratord.settings import Settings
from orchestratord.store.db import Store
from shared.problem import RateLimited

log = logging.getLogger("llorch.orchestratord.tenants")


class TenantAccounts:
    """Limits, usage and the tenant-labelled metrics of every tenant; see the module doc."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics,
        store: Store | None,
        clock: Callable[[], int],
    ) -> None:
        self.quotas = Quotas(int(settings.limits_window_s * 1000))
        self.book = UsageBook()
        self.store = store
        self.metrics = metrics
        self.clock = clock
        self.flush_s = settings.usage_flush_s
        # A usage query and a flush never overlap: a query reads the database and what is not
        # written yet, and a batch being written is in neither place or in both.
        self._lock: asyncio.Lock | None = None
        self._runner: asyncio.Task[None] | None = None
        self._updated: dict[str, int] = {}

    # --- lifecycle -----------------------------------------------------------------------

    async def load(self) -> None:
        """The limits, and the tokens spent this UTC day and month (the budgets' state)."""
        if self.store is None:
            return
        now = self.clock()
        day = now // DAY_MS
        rows, spent = await asyncio.gather(
            asyncio.to_thread(self.store.load_limits),
            asyncio.to_thread(self.store.spent, day * DAY_MS, month_start_ms(month_of(day))),
        )
        for row in rows:
            tenant = row.pop("tenant")
            self._updated[tenant] = row.pop("updated_ms")
            self.quotas.set(tenant, Limits(**row))
        self.quotas.restore(spent, now)

    def start(self) -> None:
        if self.store is not None:
            self._runner = asyncio.create_task(self._run(), name="usage-writer")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            try:
                await self.flush()
            except Exception:
                log.exception("writing usage failed; will retry")

    async def flush(self) -> None:
        if self.store is None:
            return
        async with self._guard():
            batch = self.book.take()
            if not batch:
                return
            try:
                await asyncio.to_thread(self.store.add_usage, list(batch.items()))
            except Exception:
                self.book.put_back(batch)
                raise

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:  # made on the loop that uses it
            self._lock = asyncio.Lock()
        return self._lock

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self.flush()

    # --- the hot path ----------------------------------------------------------------------

    def check(self, req: TaskRequest, estimate: int, now_ms: int) -> None:
        """Raise RateLimited / BudgetExhausted when the task, of about `estimate` prompt
        tokens, would cross a limit of its tenant (ORCH-320, ORCH-321)."""
        try:
            self.quotas.check(req.tenant, estimate, now_ms)
        except RateLimited as e:
            self.metrics.tasks.labels(e.code).inc()
            self.metrics.tenant_rejected(req.tenant, e.limit or "")
            raise

    def admitted(self, req: TaskRequest, estimate: int, now_ms: int) -> tuple[int, int]:
        """Count a task queued; returns what `closed` needs back (its window, its estimate)."""
        return self.quotas.admitted(req.tenant, estimate, now_ms), estimate

    def closed(
        self,
        req: TaskRequest,
        admitted: tuple[int, int],
        event: str,
        data: Mapping[str, object],
        prompt_tokens: int | None,
        tokens: int,
        now_ms: int,
    ) -> None:
        """Count a task ended: its `end` event's tokens (ORCH-326), or for an `error` the
        tokens relayed before it."""
        if event == "end":
            prompt, cached, completion = (
                _int(data.get("prompt_tokens")),
                _int(data.get("prompt_tokens_cached")),
                _int(data.get("tokens_out")),
            )
        else:
            prompt, cached, completion = prompt_tokens or 0, 0, tokens
        error = event == "error"
        tenant = req.tenant
        self.quotas.finished(tenant, admitted[0], admitted[1], prompt, completion, now_ms)
        self.book.add(now_ms, tenant, req.key_id, req.model, prompt, cached, completion, error)
        self.metrics.tenant_usage(tenant, prompt, cached, completion, error)

    def weight(self, tenant: str | None) -> float:
        """The tenant's weight in fair queueing (default 1.0), in memory."""
        return self.quotas.weight(tenant)

    def view(self, tenant: str | None, now_ms: int) -> tuple[dict[str, Any] | None, TenantUsage]:
        return self.quotas.view(tenant, now_ms)

    # --- admin and usage -------------------------------------------------------------------

    def limits_json(self, tenant: str) -> dict[str, Any]:
        now = self.clock()
        limits, usage = self.quotas.view(tenant, now)
        return {
            "tenant": tenant,
            "limits": limits or Limits().to_json(),
            "usage": usage,
            "updated_ms": self._updated.get(tenant),
        }

    async def set_limits(self, tenant: str, limits: Limits) -> dict[str, Any]:
        """Store the tenant's limits, then use them (a write that fails changes nothing)."""
        now = self.clock()
        row = {f: getattr(limits, f) for f in LIMIT_FIELDS}
        row.update(weight=limits.weight, updated_ms=now)
        if self.store is not None:
            await asyncio.to_thread(
                self.store.save_limits, tenant, None if limits == Limits() else row
            )
        if limits.daily_tokens is not None or limits.monthly_tokens is not None:
            await self._rebuild_spent(tenant)
        self.quotas.set(tenant, limits)
        self._updated[tenant] = now
        return self.limits_json(tenant)

    async def _rebuild_spent(self, tenant: str) -> None:
        """The tenant's tokens of this UTC day and month, from the usage table and what is not
        written yet, into its account (ORCH-411): without a budget its account may have been
        dropped while idle, and a budget set now counts what was spent before."""
        now = self.clock()
        day = now // DAY_MS
        day_ms, month_ms = day * DAY_MS, month_start_ms(month_of(day))
        async with self._guard():  # no flush between the table's read and the book's
            stored = (
                await asyncio.to_thread(self.store.spent, day_ms, month_ms)
                if self.store is not None
                else []
            )
            today, month = self.book.spent(tenant, day_ms, month_ms)
            today += sum(d for t, d, _ in stored if t == tenant)
            month += sum(m for t, _, m in stored if t == tenant)
            self.quotas.rebuild_spent(tenant, today, month, now)

    async def usage(
        self, since_ms: int, until_ms: int, by: UsageBy, tenant: str | None, restricted: bool
    ) -> list[dict[str, Any]]:
        """Usage grouped `by`, from the database and what is not written yet (ORCH-327)."""
        since = since_ms - since_ms % HOUR_MS
        async with self._guard():
            rows = (
                await asyncio.to_thread(self.store.usage, since, until_ms, tenant, restricted)
                if self.store is not None
                else []
            )
            rows += [
                (key, counts)
                for key, counts in self.book.pending.items()
                if since <= key[0] < until_ms and (not restricted or key[1] == tenant)
            ]
        return summarize(rows, by)


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
