"""Log-probabilities of a sampled token and its most likely alternatives (WRK-134).

Computed on the decode thread from the model's raw logits at the sampled position (before any
sampler, grammar included, touched them: llama.cpp samples from a copy), only for sequences whose
job asked. numpy reads the logits in place: one pass over the vocabulary, no Python loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import llama_cpp as lc
import numpy as np

from shared.wire import TokenLogprob, TopLogprob


class LogprobReader:
    """`entry(idx, token, top)`: the OpenAI-shaped entry of `token` sampled at batch row `idx`."""

    def __init__(self, ctx: Any, n_vocab: int, piece: Callable[[int], bytes]) -> None:
        self._ctx = ctx
        self._n_vocab = n_vocab
        self._piece = piece

    def entry(self, idx: int, token: int, top: int) -> TokenLogprob:
        ptr = lc.llama_get_logits_ith(self._ctx, idx)
        logits = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).astype(np.float64)
        peak = logits.max()
        logprobs = logits - (peak + np.log(np.exp(logits - peak).sum()))
        alternatives: list[TopLogprob] = []
        if top:
            best = np.argpartition(-logprobs, top - 1)[:top]
            # Most likely first; equal values by token id, so the order is reproducible.
            best = best[np.lexsort((best, -logprobs[best]))]
            alternatives = [self._top(int(t), float(logprobs[t])) for t in best]
        data = self._piece(token)
        return {
            "token": data.decode(errors="replace"),
            "bytes": list(data),
            "logprob": float(logprobs[token]),
            "top_logprobs": alternatives,
        }

    def _top(self, token: int, logprob: float) -> TopLogprob:
        data = self._piece(token)
        return {"token": data.decode(errors="replace"), "bytes": list(data), "logprob": logprob}
