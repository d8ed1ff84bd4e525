"""Prometheus metrics of one worker, on a registry owned by the app (not the global one)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class WorkerMetrics:
    def __init__(self, total: int) -> None:
        # No `_created` series: they double every counter's and histogram's series and no
        # dashboard reads them. prometheus_client keeps this switch process-wide.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs = Counter(
            "llorch_worker_jobs",
            "Jobs finished, by stop reason or error code",
            ["outcome"],
            registry=r,
        )
        self.tokens = Counter("llorch_worker_tokens_out", "Tokens generated", registry=r)
        self.prompt_tokens = Counter("llorch_worker_prompt_tokens", "Prompt tokens", registry=r)
        self.ttft = Histogram(
            "llorch_worker_ttft_seconds",
            "Request received to first token",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.queue_wait = Histogram(
            "llorch_worker_queue_wait_seconds",
            "Time waiting for a free slot",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.prompt_tokens_cached = Counter(
            "llorch_worker_prompt_tokens_cached",
            "Prompt tokens whose K/V came from the prefix cache (not decoded again)",
            registry=r,
        )
        self.embeddings = Counter(
            "llorch_worker_embedding_inputs", "Inputs embedded by POST /embeddings", registry=r
        )
        Gauge("llorch_worker_slots_total", "Slots", registry=r).set(total)
        self._busy = Gauge("llorch_worker_slots_busy", "Slots running a job", registry=r)
        self._queued = Gauge("llorch_worker_queued", "Requests waiting for a slot", registry=r)
        self._cached = Gauge(
            "llorch_worker_prefix_cache_tokens",
            "Tokens held in idle slots' KV cache, ready for reuse by a shared prefix",
            registry=r,
        )

    def watch(
        self, busy: Callable[[], int], queued: Callable[[], int], cached: Callable[[], int]
    ) -> None:
        """Gauges read at scrape time from the worker's live state."""
        self._busy.set_function(busy)
        self._queued.set_function(queued)
        self._cached.set_function(cached)
