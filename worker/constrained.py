"""Sampling one token of a grammar-constrained sequence (WRK-130), as llama.cpp's own
`common_sampler_sample` does it.

Applying a grammar to every candidate costs milliseconds per token on a 49,152-token vocabulary
(each token's text is matched against the grammar's stacks), several times the rest of sampling.
So the job's ordinary chain samples first; the grammar then checks only the chosen token, and
only when it rejects it is the full candidate list filtered by the grammar and sampled again.
Greedy picks the same token either way; a stochastic draw keeps an allowed token it drew from
the unconstrained distribution (llama-server's behaviour). The grammar is a sampler of its own,
outside the chain, and both are told the token that was finally chosen.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from typing import Any

import llama_cpp as lc
import numpy as np

# llama.cpp's llama_token_data {int32 id; float logit; float p}.
TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])


class GrammarDeadEnd(Exception):
    """The grammar admits no token of this vocabulary at this point."""


class ConstrainedSampler:
    """Owned by the decode thread: one candidate buffer reused for every constrained token."""

    def __init__(
        self, ctx: Any, n_vocab: int, quick: Callable[[Any], Callable[..., Any]] = lambda f: f
    ) -> None:
        """`quick` wraps a short foreign call so that it keeps the GIL (steploop.holding_gil);
        only the grammar's pass over the whole vocabulary (milliseconds) lets it go."""
        self._ctx = ctx
        self._logits = quick(lc.llama_get_logits_ith)
        self._apply = quick(lc.llama_sampler_apply)
        self._accept = quick(lc.llama_sampler_accept)
        self._n_vocab = n_vocab
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._cur = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self._data = ctypes.cast(self._cur.ctypes.data, ctypes.POINTER(lc.llama_token_data))
        self._all = lc.llama_token_data_array(self._data, n_vocab, -1, False)
        self._one_data = (lc.llama_token_data * 1)()
        self._one = lc.llama_token_data_array(self._one_data, 1, -1, False)
        self.resampled = 0  # tokens the grammar rejected (read by benchmarks)

    def sample(self, chain: Any, grammar: Any, idx: int) -> int:
        """The token for batch row `idx`; the chain and the grammar have accepted it."""
        self._fill(idx)
        self._apply(chain, ctypes.byref(self._all))
        token = self._selected()
        if not self._allowed(grammar, token):
            self.resampled += 1
            self._fill(idx)
            lc.llama_sampler_apply(grammar, ctypes.byref(self._all))
            if not np.isfinite(self._cur["logit"]).any():
                raise GrammarDeadEnd("the grammar admits no token of this vocabulary here")
            self._apply(chain, ctypes.byref(self._all))
            token = self._selected()
        self._accept(grammar, token)
        self._accept(chain, token)
        return token

    def _fill(self, idx: int) -> None:
        ptr = self._logits(self._ctx, idx)
        cur = self._cur
        cur["id"] = self._ids
        cur["logit"] = np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))
        cur["p"] = 0.0
        # A sampler may have pointed it at a buffer of its own (the bindings type it as an array).
        self._all.data = self._data  # type: ignore[assignment]
        self._all.size = self._n_vocab
        self._all.selected = -1
        self._all.sorted = False

    def _selected(self) -> int:
        a = self._all
        if not 0 <= a.selected < a.size:
            raise GrammarDeadEnd("the sampler selected no token")
        return int(a.data[a.selected].id)

    def _allowed(self, grammar: Any, token: int) -> bool:
        self._one_data[0] = lc.llama_token_data(token, 0.0, 0.0)
        self._one.size, self._one.selected, self._one.sorted = 1, -1, False
        self._apply(grammar, ctypes.byref(self._one))
        return not math.isinf(self._one_data[0].logit)
