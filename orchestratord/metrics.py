"""Prometheus metrics of orchestratord, in a CollectorRegistry owned by the app (not the global).

Gauges that describe current state (queue depth, workers by state) are set at scrape time from
the live objects, so nothing on the hot path updates them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from shared.wire import WORKER_STATES

log = logging.getLogger("llorch.orchestratord.policy")

_LATENCY_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_TPOT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
_POLICY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1)


OTHER_TENANTS = "other"  # the `tenant` label of tenants beyond --metrics-tenant-labels


class Metrics:
    def __init__(self, tenant_labels: int = 100) -> None:
        # No `_created` series: they double every counter's and histogram's series and no
        # dashboard reads them. prometheus_client keeps this switch process-wide.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.queue_depth = Gauge(
            "llorch_orchestrator_queue_depth",
            "Tasks waiting in the queue, by lane",
            ["lane"],
            registry=r,
        )
        self.tasks = Counter(
            "llorch_orchestrator_tasks",
            "Finished tasks by outcome code (OK for success)",
            ["code"],
            registry=r,
        )
        self.ttft = Histogram(
            "llorch_orchestrator_ttft_seconds",
            "Submit to first token",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_time = Histogram(
            "llorch_orchestrator_queue_seconds",
            "Submit to dispatch on a worker",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tpot = Histogram(
            "llorch_orchestrator_time_per_output_token_seconds",
            "Decode time per output token after the first",
            buckets=_TPOT_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "llorch_orchestrator_tokens_out", "Tokens relayed to clients", registry=r
        )
        self.workers = Gauge(
            "llorch_orchestrator_workers", "Registered workers by state", ["state"], registry=r
        )
        self.policy_eval = Histogram(
            "llorch_orchestrator_policy_eval_seconds",
            "Policy function evaluation time",
            ["fn"],
            buckets=_POLICY_BUCKETS,
            registry=r,
        )
        self.policy_fallbacks = Counter(
            "llorch_orchestrator_policy_fallbacks",
            "Policy calls answered by the built-in policy instead",
            ["fn", "reason"],
            registry=r,
        )
        self.policy_breaker_trips = Counter(
            "llorch_orchestrator_policy_breaker_trips",
            "Times the policy's own functions were set aside for the built-in ones after "
            "repeated failures or overruns (POL-092)",
            registry=r,
        )
        self.policy_breaker_open = Gauge(
            "llorch_orchestrator_policy_breaker_open",
            "1 while the built-in policy stands in for the policy's own functions",
            registry=r,
        )
        self.retries = Counter(
            "llorch_orchestrator_dispatch_retries",
            "Tasks re-dispatched after a worker failed before a token",
            registry=r,
        )
        # Per tenant (ORCH-328): the label set is capped, the rest is `other`.
        self.tenant_tokens = Counter(
            "llorch_orchestrator_tenant_tokens",
            "Tokens of finished tasks by tenant and kind (prompt, cached, completion)",
            ["tenant", "kind"],
            registry=r,
        )
        self.tenant_tasks = Counter(
            "llorch_orchestrator_tenant_tasks",
            "Finished tasks by tenant and outcome (ok, error)",
            ["tenant", "outcome"],
            registry=r,
        )
        self.tenant_rejections = Counter(
            "llorch_orchestrator_tenant_rejections",
            "Tasks refused by a tenant's limit, by tenant and limit",
            ["tenant", "limit"],
            registry=r,
        )
        self._tenant_cap = tenant_labels
        self._tenant_labels: dict[str | None, str] = {}
        self._tenant_children: dict[str, tuple[Any, ...]] = {}
        for lane in ("interactive", "batch"):
            self.queue_depth.labels(lane)
        # Series that exist from the start read as 0, not as absent, in rate() queries.
        for code in (
            "OK",
            "CANCELLED",
            "WORKER_RESET",
            "QUEUE_FULL",
            "ADMISSION_REJECT",
            "DEADLINE_UNMET",
            "INVALID_PARAMS",
            "RATE_LIMITED",
            "BUDGET_EXHAUSTED",
        ):
            self.tasks.labels(code)
        for fn in ("admit", "schedule", "plan"):
            self.policy_eval.labels(fn)
            for reason in ("error", "timeout", "bad_return", "bad_input"):
                self.policy_fallbacks.labels(fn, reason)

    def tenant_label(self, tenant: str | None) -> str:
        """The tenant's `tenant` label: its name for the first --metrics-tenant-labels tenants
        seen, `other` beyond them; '' for tasks without a tenant."""
        label = self._tenant_labels.get(tenant)
        if label is None:
            if tenant is None:
                label = ""
            elif len(self._tenant_labels) - (None in self._tenant_labels) < self._tenant_cap:
                label = tenant
            else:
                return OTHER_TENANTS
            self._tenant_labels[tenant] = label
        return label

    def tenant_usage(
        self, tenant: str | None, prompt: int, cached: int, completion: int, error: bool
    ) -> None:
        """Count a finished task; the label's series are looked up once per tenant."""
        label = self.tenant_label(tenant)
        children = self._tenant_children.get(label)
        if children is None:
            children = self._tenant_children[label] = (
                self.tenant_tokens.labels(label, "prompt"),
                self.tenant_tokens.labels(label, "cached"),
                self.tenant_tokens.labels(label, "completion"),
                self.tenant_tasks.labels(label, "ok"),
                self.tenant_tasks.labels(label, "error"),
            )
        children[0].inc(prompt)
        children[1].inc(cached)
        children[2].inc(completion)
        children[4 if error else 3].inc()

    def render(self, queue_depth: Mapping[str, int], worker_counts: Mapping[str, int]) -> bytes:
        for lane, n in queue_depth.items():
            self.queue_depth.labels(lane).set(n)
        for state in WORKER_STATES:
            self.workers.labels(state).set(worker_counts.get(state, 0))
        return generate_latest(self.registry)


class MetricsPolicyObserver:
    """The PolicyObserver the policy engine reports to: latency histogram, fallback counter.

    A fallback is logged once per (function, reason) so a broken policy cannot flood the log.
    """

    def __init__(self, metrics: Metrics, warn: Callable[[str], None] | None = None) -> None:
        self.metrics = metrics
        self._warned: set[tuple[str, str]] = set()
        self._warn = warn or log.warning

    def observe(self, fn: str, seconds: float) -> None:
        self.metrics.policy_eval.labels(fn).observe(seconds)

    def fallback(self, fn: str, reason: str) -> None:
        self.metrics.policy_fallbacks.labels(fn, reason).inc()
        if (fn, reason) not in self._warned:
            self._warned.add((fn, reason))
            self._warn(f"policy {fn}() failed ({reason}); using the built-in policy")
