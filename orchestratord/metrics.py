"""Prometheus metrics of orchestratord, in a CollectorRegistry owned by the app (not the global).

Gauges that describe current state (queue depth, workers by state) are set at scrape time from
the live objects, so nothing on the hot path updates them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

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
        self.failovers = Counter(
            "llorch_orchestrator_failovers",
            "Running tasks moved to another worker after theirs broke mid-stream, by reason "
            "(ORCH-383)",
            ["reason"],
            registry=r,
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
        # Per tenant (ORCH-328): the label set is capped, the rest is `other`. The counts are
        # plain integers, turned into series at scrape time: a prometheus_client child's inc()
        # takes a lock, and a task's end would take five.
        self._tenant_cap = tenant_labels
        self._tenant_labels: dict[str | None, str] = {}
        # label -> [prompt, cached, completion, ok, error]
        self.tenant_counts: dict[str, list[int]] = {}
        self.tenant_rejections: dict[tuple[str, str], int] = {}
        r.register(_TenantCollector(self))
        self.cache_predictions = Counter(
            "llorch_orchestrator_cache_predictions",
            "Tasks placed with a cache-index prediction, by whether the worker then reused at "
            "least the predicted prompt tokens (hit), fewer (miss), or some where none were "
            "predicted (unforeseen): the hit rate is hit / (hit + miss) (ORCH-404)",
            ["outcome"],
            registry=r,
        )
        self.cache_index = Gauge(
            "llorch_orchestrator_cache_index",
            "The cache index of the workers' KV blocks: entries (worker-block pairs), blocks, "
            "max_entries, and pairs dropped for the bound since start (ORCH-403)",
            ["figure"],
            registry=r,
        )
        for outcome in ("hit", "miss", "unforeseen"):
            self.cache_predictions.labels(outcome)
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
        """Count a finished task of `tenant`."""
        label = self.tenant_label(tenant)
        counts = self.tenant_counts.get(label)
        if counts is None:
            counts = self.tenant_counts[label] = [0, 0, 0, 0, 0]
        counts[0] += prompt
        counts[1] += cached
        counts[2] += completion
        counts[4 if error else 3] += 1

    def tenant_rejected(self, tenant: str | None, limit: str) -> None:
        key = (self.tenant_label(tenant), limit)
        self.tenant_rejections[key] = self.tenant_rejections.get(key, 0) + 1

    def render(
        self,
        queue_depth: Mapping[str, int],
        worker_counts: Mapping[str, int],
        cache_index: Mapping[str, int] | None = None,
    ) -> bytes:
        for figure, n in (cache_index or {}).items():
            self.cache_index.labels(figure).set(n)
        for lane, n in queue_depth.items():
            self.queue_depth.labels(lane).set(n)
        for state in WORKER_STATES:
            self.workers.labels(state).set(worker_counts.get(state, 0))
        return generate_latest(self.registry)


class _TenantCollector(Collector):
    """The per-tenant counters (ORCH-328), read from `Metrics`' integers at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Metric]:
        return self._families()

    def collect(self) -> Iterable[Metric]:
        return self._families()

    def _families(self) -> list[Metric]:
        m = self.metrics
        tokens = CounterMetricFamily(
            "llorch_orchestrator_tenant_tokens",
            "Tokens of finished tasks by tenant and kind (prompt, cached, completion)",
            labels=["tenant", "kind"],
        )
        tasks = CounterMetricFamily(
            "llorch_orchestrator_tenant_tasks",
            "Finished tasks by tenant and outcome (ok, error)",
            labels=["tenant", "outcome"],
        )
        refused = CounterMetricFamily(
            "llorch_orchestrator_tenant_rejections",
            "Tasks refused by a tenant's limit, by tenant and limit",
            labels=["tenant", "limit"],
        )
        for label, c in list(m.tenant_counts.items()):
            for kind, n in zip(("prompt", "cached", "completion"), c, strict=False):
                tokens.add_metric([label, kind], n)
            tasks.add_metric([label, "ok"], c[3])
            tasks.add_metric([label, "error"], c[4])
        for (label, limit), n in list(m.tenant_rejections.items()):
            refused.add_metric([label, limit], n)
        return [tokens, tasks, refused]


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
