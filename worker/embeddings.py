"""Sentence embeddings: a second llama.cpp context over the same weights, with embeddings on.

Pooling follows the model's metadata (`<arch>.pooling_type`): an embedding model says mean, CLS or
last; a generative model says nothing (or none) and is mean-pooled over its last hidden states; a
reranking model (rank pooling) scores pairs and has no embedding vector, so it cannot embed.
Vectors are L2-normalized (WRK-111).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp as lc

from shared.wire import Pooling
from worker.types import EngineError

_POOLING: dict[int, Pooling] = {
    lc.LLAMA_POOLING_TYPE_MEAN: "mean",
    lc.LLAMA_POOLING_TYPE_CLS: "cls",
    lc.LLAMA_POOLING_TYPE_LAST: "last",
}
MAX_EMBED_TOKENS = 2048  # one input is one ubatch (pooling needs it whole): this bounds its buffer


@dataclass(frozen=True, slots=True)
class EmbeddingSupport:
    pooling: Pooling | None  # None: the model cannot embed
    reason: str  # why (shown in /health and in the 400)

    @property
    def available(self) -> bool:
        return self.pooling is not None


def embedding_support(metadata: Mapping[str, str]) -> EmbeddingSupport:
    """What the model's metadata says about pooling (pure: no llama.cpp call)."""
    arch = metadata.get("general.architecture", "")
    raw = metadata.get(f"{arch}.pooling_type")
    try:
        kind = int(raw) if raw is not None else lc.LLAMA_POOLING_TYPE_NONE
    except ValueError:
        kind = lc.LLAMA_POOLING_TYPE_NONE
    if kind == lc.LLAMA_POOLING_TYPE_RANK:
        return EmbeddingSupport(None, "a reranking model (rank pooling) scores pairs: no vectors")
    if kind in _POOLING:
        return EmbeddingSupport(_POOLING[kind], f"{_POOLING[kind]} pooling from the model")
    return EmbeddingSupport("mean", "a generative model: mean of its last hidden states")


_POOLING_ID = {v: k for k, v in _POOLING.items()}


class Embedder:
    """Embeds token lists one at a time (thread-safe: one lock around the context)."""

    def __init__(self, model: Any, support: EmbeddingSupport, n_ctx: int, threads: int) -> None:
        assert support.pooling is not None
        self.n_ctx = min(n_ctx, MAX_EMBED_TOKENS)
        params = lc.llama_context_default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = self.n_ctx
        params.n_ubatch = self.n_ctx
        params.n_seq_max = 1
        params.embeddings = True
        params.pooling_type = _POOLING_ID[support.pooling]
        params.n_threads = threads
        params.n_threads_batch = threads
        ctx = lc.llama_init_from_model(model, params)
        if not ctx:
            raise EngineError("llama.cpp could not create an embedding context")
        self._ctx = ctx
        self._n_embd = lc.llama_model_n_embd(model)
        self._batch = lc.llama_batch_init(self.n_ctx, 0, 1)
        self._lock = threading.Lock()

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        with self._lock:
            return [self._one(tokens) for tokens in inputs]

    def _one(self, tokens: Sequence[int]) -> list[float]:
        if not 0 < len(tokens) <= self.n_ctx:
            raise EngineError(f"an input of {len(tokens)} tokens (limit {self.n_ctx})")
        lc.llama_memory_clear(lc.llama_get_memory(self._ctx), True)
        b = self._batch
        for i, tok in enumerate(tokens):
            b.token[i] = tok
            b.pos[i] = i
            b.n_seq_id[i] = 1
            b.seq_id[i][0] = 0
            b.logits[i] = 1
        b.n_tokens = len(tokens)
        if lc.llama_decode(self._ctx, b) != 0:
            raise EngineError("llama_decode failed on an embedding input")
        ptr = lc.llama_get_embeddings_seq(self._ctx, 0)
        if not ptr:
            raise EngineError("llama.cpp returned no pooled embedding")
        vec = [float(ptr[i]) for i in range(self._n_embd)]
        norm = math.sqrt(sum(x * x for x in vec)) or 1.0
        return [x / norm for x in vec]

    def close(self) -> None:
        lc.llama_batch_free(self._batch)
        lc.llama_free(self._ctx)
