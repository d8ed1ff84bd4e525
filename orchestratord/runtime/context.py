"""A prompt that cannot fit its model's context is refused at submit, counted by the model's
own tokenizer (ORCH-163).

Most prompts are far shorter than the context: the upper bound of `max_prompt_tokens` (no
tokenizer, a pass over the text) accepts them without a word to any worker, so a task costs
orchestratord nothing more. Only a prompt the bound cannot vouch for is counted by a ready
worker of its model (`POST /tokenize`, WRK-032), on the event loop as one asynchronous request
on the relay's kept-alive connections. When no worker is ready to count, or the one asked
fails, the task is accepted as before: the worker that runs it refuses it (WRK-021).

The same answer carries the prompt's token-block hashes (WRK-173), which the cache index needs
to say which worker holds the prompt's prefix (ORCH-402). orchestratord has no tokenizer of its
own (the model and its chat template live on the workers), so a prompt is sent to be counted
only when the index could answer: some worker of the model reports cached blocks and the
prompt may fill one block. Counted once for both checks, asynchronously, on the tokenizer
threads of a worker, never on orchestratord's event loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from orchestratord.domain.admission import max_prompt_tokens
from orchestratord.domain.registry import Worker
from orchestratord.domain.tasks import TaskRequest
from orchestratord.runtime.core import Core
from orchestratord.worker_client.relay import Tokenized, WorkerLost, WorkerRefused, tokenize
from shared.problem import ContextLengthExceeded

log = logging.getLogger("llorch.orchestratord.context")
# Counting even the longest prompt takes a worker well under this; a worker slower than that
# is not waited for (the task is accepted and the worker's own check stays).
COUNT_TIMEOUT_S = 5.0
# The hashes only improve placement: a worker slower than this to count is not waited for.
HASH_TIMEOUT_S = 2.0


async def check_context(
    service: Core, req: TaskRequest, serving: Sequence[Worker]
) -> Tokenized | None:
    """Raise ContextLengthExceeded when the prompt plus `max_tokens` exceeds the largest
    `n_ctx` of `serving` (the model's registered workers). Returns the worker's count when
    one was asked for."""
    if req.embed_input is not None or not serving:
        return None
    sizes = [w.n_ctx for w in serving]
    if min(sizes) <= 0:  # a worker that did not say: it may fit (as check_servable)
        return None
    largest = max(sizes)
    if max_prompt_tokens(req) + req.max_tokens <= largest:
        return None
    counted = await _count(service, req, serving, lambda w: w.n_ctx, COUNT_TIMEOUT_S)
    if counted is None:
        # Counted or not, the worker that runs the task checks it again (WRK-021).
        return None
    n = counted.n_tokens
    if n + req.max_tokens > largest:
        raise ContextLengthExceeded(
            f"prompt ({n} tokens) + max_tokens ({req.max_tokens}) exceeds the context of "
            f"every worker of {req.model} ({largest} tokens)",
            errors=[{"field": "max_tokens", "message": "prompt + max_tokens exceeds n_ctx"}],
        )
    return counted


async def prompt_blocks(
    service: Core, req: TaskRequest, serving: Sequence[Worker], counted: Tokenized | None
) -> Tokenized | None:
    """The prompt's token-block hashes for the cache index (ORCH-402), or None when the index
    could not use them or no worker answered in time (the task is placed without them)."""
    if req.embed_input is not None or not serving:
        return None
    if counted is not None:
        return counted if counted.block_hashes else None
    index = service.registry.kv
    if not index.has(req.model):
        return None
    size = index.block_size(req.model)
    if size <= 0 or max_prompt_tokens(req) < size:
        return None  # not one full block: nothing to look up
    answer = await _count(service, req, serving, lambda w: w.free_slots, HASH_TIMEOUT_S)
    return answer if answer is not None and answer.block_hashes else None


async def _count(
    service: Core,
    req: TaskRequest,
    serving: Sequence[Worker],
    rank: Callable[[Worker], int],
    timeout_s: float,
) -> Tokenized | None:
    """The prompt counted (and hashed) by the ready worker of `serving` that ranks highest;
    None when none is ready or it did not answer within `timeout_s`."""
    now = service.clock()
    ready = [w for w in serving if service.registry.usable(w, now)]
    if not ready:
        return None
    worker = max(ready, key=rank)
    settings = service.settings
    try:
        return await tokenize(
            worker.url,
            settings.cluster_token,
            req.worker_body("count"),
            connect_timeout=settings.connect_timeout_s,
            read_timeout=min(settings.read_timeout_s, timeout_s),
            pool=service.connections,
        )
    except (WorkerRefused, WorkerLost) as e:
        log.warning("worker %s could not count a prompt: %s", worker.id, e)
        return None
