"""Prometheus metrics of orchestratord, in a CollectorRegistry owned by the app (not the global).

Gauges that describe current state (queue depth, workers by state) are set at scrape time from
the live objects, so nothing on the hot path updates them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

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


class Metrics:
    def __init__(self) -> None:
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
        ):
            self.tasks.labels(code)
        for fn in ("admit", "schedule", "plan"):
            self.policy_eval.labels(fn)
            for reason in ("error", "timeout", "bad_return", "bad_input"):
                self.policy_fallbacks.labels(fn, reason)

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
