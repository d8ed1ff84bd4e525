"""The cluster the SDK, OpenAI and schemathesis tests run against: a real orchestratord with
client API keys and one real llorch-workerd, built on the shared e2e helpers in cluster.py."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.orchestratord.cluster import CT, MODEL, orchestratord, worker
from tests.support import Proc

CLUSTER_TOKEN = CT
API_KEY = "key-a"
TENANT = "tenant-a"
WORKER_ID = "w-sdk-1"
__all__ = ["API_KEY", "CLUSTER_TOKEN", "LONG", "MODEL", "TENANT", "WORKER_ID"]

# A generation that runs long enough to be cancelled mid-stream (`ignore_eos` is a /v2
# extension for tests and benchmarks: exactly max_tokens tokens).
LONG: dict[str, Any] = {"prompt": "Tell me everything", "max_tokens": 16000, "ignore_eos": True}


@dataclass
class Cluster:
    orchestrator: Proc
    worker: Proc

    @property
    def url(self) -> str:
        return self.orchestrator.url


@contextlib.contextmanager
def run_cluster(
    model: Path, tmp: Path, *, slots: int = 2, extra: Sequence[str] = ()
) -> Iterator[Cluster]:
    """orchestratord (API key `TENANT:API_KEY`, cluster token) and one ready worker."""
    with (
        # Tests park tasks on "no-such-model": the operator expects it, so it queues (ORCH-160).
        orchestratord(
            tmp, "--api-key", f"{TENANT}:{API_KEY}", "--expect-model", "no-such-model", *extra
        ) as orch,
        worker(model, tmp, orch.url, WORKER_ID, slots=slots) as w,
    ):
        yield Cluster(orch, w)
