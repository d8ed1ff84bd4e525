"""A prompt that cannot fit its model's context is refused at submit, counted by the model's
own tokenizer (ORCH-163).

Most prompts are far shorter than the context: the upper bound of `max_prompt_tokens` (no
tokenizer, a pass over the text) accepts them without a word to any worker, so a task costs
orchestratord nothing more. Only a prompt the bound cannot vouch for is counted by a ready
worker of its model (`POST /tokenize`, WRK-032), on the event loop as one asynchronous request
on the relay's kept-alive connections. When no worker is ready to count, or the one asked
fails, the task is accepted as before: the worker that runs it refuses it (WRK-021).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from orchestratord.domain.admission import max_prompt_tokens
from orchestratord.domain.registry import Worker
from orchestratord.domain.tasks import TaskRequest
from orchestratord.runtime.core import Core
from orchestratord.worker_client.relay import WorkerLost, WorkerRefused, count_tokens
from shared.problem import ContextLengthExceeded

log = logging.getLogger("llorch.orchestratord.context")
# Counting even the longest prompt takes a worker well under this; a worker slower than that
# is not waited for (the task is accepted and the worker's own check stays).
COUNT_TIMEOUT_S = 5.0


async def check_context(service: Core, req: TaskRequest, serving: Sequence[Worker]) -> None:
    """Raise ContextLengthExceeded when the prompt plus `max_tokens` exceeds the largest
    `n_ctx` of `serving` (the model's registered workers)."""
    if req.embed_input is not None or not serving:
        return
    sizes = [w.n_ctx for w in serving]
    if min(sizes) <= 0:  # a worker that did not say: it may fit (as check_servable)
        return
    largest = max(sizes)
    if max_prompt_tokens(req) + req.max_tokens <= largest:
        return
    now = service.clock()
    ready = [w for w in serving if service.registry.usable(w, now)]
    if not ready:
        return
    worker = max(ready, key=lambda w: w.n_ctx)
    settings = service.settings
    try:
        n = await count_tokens(
            worker.url,
            settings.cluster_token,
            req.worker_body("count"),
            connect_timeout=settings.connect_timeout_s,
            read_timeout=min(settings.read_timeout_s, COUNT_TIMEOUT_S),
            pool=service.connections,
        )
    except (WorkerRefused, WorkerLost) as e:
        # Counted or not, the worker that runs the task checks it again (WRK-021).
        log.warning("worker %s could not count a prompt: %s", worker.id, e)
        return
    if n + req.max_tokens > largest:
        raise ContextLengthExceeded(
            f"prompt ({n} tokens) + max_tokens ({req.max_tokens}) exceeds the context of "
            f"every worker of {req.model} ({largest} tokens)",
            errors=[{"field": "max_tokens", "message": "prompt + max_tokens exceeds n_ctx"}],
        )
