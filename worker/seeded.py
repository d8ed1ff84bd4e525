"""Seeded sampling that a resumed generation continues exactly (WRK-162).

llama.cpp's `dist` sampler draws from one random stream per chain: the draw for a token depends
on how many were drawn before, and it walks the candidates in the order the chain sorted them
(by logit), so two logits within rounding of each other (a prefill computes a token's K/V in
another batch shape than a decode step did; CPU sums differ by ~1e-5) swap places and the same
random number picks another token. Here the chain runs without `dist`; the draw for the token at
generation position p is a counter-based hash of (seed, p), and the categorical walks the
chain's candidates in token-id order. A job resumed on another worker at position k draws
exactly what the original would have drawn from position k on, and a 1e-5 difference in a
logit changes a draw only when it lands within about that much of a boundary.
"""

from __future__ import annotations

import ctypes
import math
from collections.abc import Callable
from typing import Any

import llama_cpp as lc
import numpy as np

from worker.constrained import TOKEN_DATA

_MASK = (1 << 64) - 1
_SMALL = 64


def _mix(x: int) -> int:
    """splitmix64's finalizer: a bijection of 64-bit words that scatters every input bit."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _MASK
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _MASK
    return x ^ (x >> 31)


def uniform(seed: int, position: int) -> float:
    """The draw in [0, 1) for generation position `position` of a job seeded `seed`."""
    x = _mix((_mix(seed + 0x9E3779B97F4A7C15 & _MASK) + position) & _MASK)
    return (x >> 11) * (1.0 / (1 << 53))


class SeededDraw:
    """Owned by the decode thread: applies a job's chain (no `dist` in it) to the logits of one
    batch row and draws from what is left; one candidate buffer for every token."""

    def __init__(
        self, ctx: Any, n_vocab: int, quick: Callable[[Any], Callable[..., Any]] = lambda f: f
    ) -> None:
        self._ctx = ctx
        self._logits = quick(lc.llama_get_logits_ith)
        self._apply = quick(lc.llama_sampler_apply)
        self._accept = quick(lc.llama_sampler_accept)
        self._n_vocab = n_vocab
        self._cur = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._data = ctypes.cast(self._cur.ctypes.data, ctypes.POINTER(lc.llama_token_data))
        self._all = lc.llama_token_data_array(self._data, n_vocab, -1, False)
        self._address = self._cur.ctypes.data
        self._row = ctypes.c_float * n_vocab
        words = self._cur.view(np.int32).reshape(n_vocab, 3)  # strided columns: fast fills
        self._id_col = words[:, 0]
        self._logit_col = self._cur.view(np.float32).reshape(n_vocab, 3)[:, 1]

    def sample(self, chain: Any, idx: int, seed: int, position: int) -> int:
        """The token for batch row `idx`; the chain has accepted it."""
        address = ctypes.cast(self._logits(self._ctx, idx), ctypes.c_void_p).value or 0
        # A view through a ctypes type made once: as_array of a pointer would make a new
        # array type per call (hundreds of microseconds).
        logits = np.ctypeslib.as_array(self._row.from_address(address))
        self._id_col[:] = self._ids  # the chain sorted the last token's candidates in place
        self._logit_col[:] = logits
        a = self._all
        a.data = self._data  # type: ignore[assignment]  # a sampler may have repointed it
        a.size, a.selected, a.sorted = self._n_vocab, -1, False
        self._apply(chain, ctypes.byref(a))
        token = self._draw(self._candidates(a), uniform(seed, position))
        self._accept(chain, token)
        return token

    def _candidates(self, a: Any) -> Any:
        n = int(a.size)
        address = ctypes.cast(a.data, ctypes.c_void_p).value
        if address == self._address:
            return self._cur[:n]
        raw = ctypes.cast(a.data, ctypes.POINTER(ctypes.c_uint8))
        return np.ctypeslib.as_array(raw, shape=(n * TOKEN_DATA.itemsize,)).view(TOKEN_DATA)

    @staticmethod
    def _draw(view: Any, u: float) -> int:
        n = len(view)
        if n <= _SMALL:  # a few dozen candidates (top_k): plain Python beats numpy's calls
            pairs: list[tuple[int, float]] = sorted(
                zip(view["id"].tolist(), view["logit"].tolist(), strict=True)
            )
            top = max(lg for _, lg in pairs)
            if top == -math.inf:
                return int(pairs[0][0])
            weights = [math.exp(lg - top) if lg != -math.inf else 0.0 for _, lg in pairs]
            target = u * math.fsum(weights)
            acc, last = 0.0, pairs[0][0]
            for (tok, _), w in zip(pairs, weights, strict=True):
                if w > 0.0:  # rounding may leave the target past the sum: the last one then
                    acc, last = acc + w, tok
                    if acc > target:
                        return int(tok)
            return int(last)
        order = np.argsort(view["id"], kind="stable")
        ids = view["id"][order]
        logits = view["logit"][order].astype(np.float64)
        finite = np.isfinite(logits)
        if not finite.any():
            return int(ids[0])
        cdf = np.cumsum(np.where(finite, np.exp(logits - logits[finite].max()), 0.0))
        k = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
        return int(ids[min(k, n - 1)])
