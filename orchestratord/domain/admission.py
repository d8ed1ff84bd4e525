"""What orchestratord refuses at submit, before a task takes a place in the queue; pure.

A task no worker could run is refused at once (ORCH-160, ORCH-161) instead of failing after it
waited: a model no registered worker serves is 404 `MODEL_NOT_FOUND` listing the models there
are (unless the operator expects it: `--expect-model`, or a worker served it within
`--model-grace-ms`: ORCH-164), and a task whose prompt plus
`max_tokens` cannot fit the context of any worker of its model is 400, as the worker would
answer. orchestratord cannot tokenize, so the prompt's size in tokens is a lower bound here
(`MAX_TOKEN_BYTES`); the worker's own check stays the exact one.

`max_prompt_tokens` is the other side: an upper bound that lets orchestratord accept a prompt
that surely fits without asking a worker to count it (ORCH-163, runtime/context.py).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence

from orchestratord.domain.registry import Worker
from orchestratord.domain.tasks import TaskRequest
from shared.problem import ContextLengthExceeded, InvalidParams, ModelNotFound
from shared.prompt_constructor.tools import TOOLS_POSTAMBLE, TOOLS_PREAMBLE

_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# The fallback's text around the tool listing, and a call's markup per message (PC-103).
TOOLS_PROMPT_CHARS = len(TOOLS_PREAMBLE) + len(TOOLS_POSTAMBLE) + 64

# No tokenizer llorch serves has tokens longer than this many bytes of text, so a prompt of
# N bytes is at least N / MAX_TOKEN_BYTES tokens (plus the BOS token).
MAX_TOKEN_BYTES = 64


# Tokens a tokenizer adds to a text of N bytes beyond N: BOS, EOS, SentencePiece's space prefix.
ADDED_TOKENS = 4
# Tokens a chat template adds per message (ChatML, Llama 3, Gemma: about 6, markers and role)
# and once (a default system prompt, a date line). Generous, as the bound must be: where a
# template adds more, the worker's own check still refuses the task (WRK-021).
MESSAGE_TOKENS = 32
TEMPLATE_TOKENS = 512


def min_prompt_tokens(req: TaskRequest) -> int:
    """A lower bound of the prompt's length in tokens."""
    if req.prompt is not None:
        size = len(req.prompt.encode())
    else:
        size = sum(len(m.get("content", "").encode()) for m in req.messages or ())
    return 1 + size // MAX_TOKEN_BYTES


def max_prompt_tokens(req: TaskRequest) -> int:
    """An upper bound of the prompt's length in tokens, with no tokenizer: every token of a
    byte-level or byte-fallback vocabulary is at least one byte of text."""
    if req.prompt is not None:
        return _utf8_len(req.prompt) + ADDED_TOKENS
    messages = req.messages or ()
    size = sum(
        _utf8_len(v if isinstance(v, str) else _dumps(v)) for m in messages for v in m.values()
    )
    if req.tools:  # the listing and the fallback's instructions around it (PC-103)
        size += _utf8_len(_dumps(list(req.tools))) + TOOLS_PROMPT_CHARS
    return size + MESSAGE_TOKENS * len(messages) + TEMPLATE_TOKENS + ADDED_TOKENS


def _utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode())


def check_servable(
    req: TaskRequest,
    workers: Sequence[Worker],
    expected: Collection[str],
    models: Sequence[str],
    *,
    recent: bool = False,
) -> None:
    """Raise ModelNotFound or InvalidParams for a task no worker could run.

    `workers` are the registered, not dead, workers of the task's model; `models` what every
    such worker serves, for the message; `recent` whether a worker served the model within
    the grace (it is likely restarting: the task waits for it).
    """
    if not workers:
        if req.model in expected or recent:
            return
        listing = ", ".join(models) if models else "none yet"
        raise ModelNotFound(
            f"no worker serves model {req.model!r}; models served: {listing}",
            errors=[{"field": "model", "message": f"not served; served: {listing}"}],
        )
    sizes = [w.n_ctx for w in workers]
    if any(n <= 0 for n in sizes):  # a worker that did not say: it may fit
        return
    need = min_prompt_tokens(req) + req.max_tokens
    largest = max(sizes)
    if need > largest:
        raise ContextLengthExceeded(
            f"prompt (at least {need - req.max_tokens} tokens) + max_tokens ({req.max_tokens}) "
            f"exceeds the context of every worker of {req.model} ({largest} tokens)",
            errors=[{"field": "max_tokens", "message": "prompt + max_tokens exceeds n_ctx"}],
        )


def check_embeddable(req: TaskRequest, workers: Sequence[Worker]) -> None:
    """Raise InvalidParams for an embeddings task when every worker of its model said its model
    cannot embed (ORCH-231); a worker that has not said yet may."""
    if workers and not any(w.can_embed for w in workers):
        raise InvalidParams(
            f"model {req.model} cannot produce embeddings (its workers say so); "
            "use an embedding model or a generative model with mean pooling",
            errors=[{"field": "model", "message": "this model cannot produce embeddings"}],
        )


def check_choices(req: TaskRequest, workers: Sequence[Worker]) -> None:
    """Raise InvalidParams for a task of `n` choices that no worker of its model could ever
    run: each takes `n` slots of one worker at once (ORCH-270), and queued it would only wait
    for its deadline. Without workers (an expected model) it queues like any task."""
    if req.n > 1 and workers and all(w.slots_total < req.n for w in workers):
        most = max(w.slots_total for w in workers)
        message = f"n ({req.n}) exceeds the slots of every worker of {req.model} (at most {most})"
        raise InvalidParams(message, errors=[{"field": "n", "message": message}])
