"""The inference engine: one GGUF model, N independent slots, a token loop we own.

Built on llama-cpp-python's C-level bindings (`llama_cpp.llama_*`), not its `Llama` class:
`create_completion(stream=True)` re-detokenizes the whole output every token (quadratic), and a
`Llama` object holds one context, so slots would each load the weights again. Here the weights are
loaded once and every slot is its own `llama_context` over them. ctypes releases the GIL inside
llama.cpp calls, so slots decode in parallel threads while the event loop streams.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import llama_cpp as lc

from worker.textstream import TextStream

Backend = Literal["cpu", "cuda", "metal"]
StopReason = Literal["MAX_TOKENS", "EOS", "STOP_SEQUENCE", "CANCELLED"]

_PIECE_BUF = 256
log = logging.getLogger("llorch.worker.engine")


class EngineError(Exception):
    """The model could not be loaded or a decode step failed."""


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    seed: int | None = None


@dataclass(frozen=True, slots=True)
class GenerationJob:
    prompt_tokens: Sequence[int]
    max_tokens: int
    sampling: Sampling
    stops: tuple[str, ...] = ()
    ignore_eos: bool = False  # benchmarks: generate exactly max_tokens


@dataclass(frozen=True, slots=True)
class Outcome:
    stop_reason: StopReason
    tokens_out: int
    first_token_at: float | None  # time.perf_counter() of the first generated token
    last_token_at: float | None
    tokens: tuple[int, ...] = ()  # the generated token ids, EOS excluded


class TokenSink(Protocol):
    """Receives text from the token loop's thread. Must be cheap and thread-safe."""

    def token(self, text: str) -> None: ...


class InferenceEngine(Protocol):
    """The seam between the HTTP worker and a model runtime."""

    model_path: Path
    n_ctx: int
    slots: int
    metadata: dict[str, str]
    bos_text: str | None  # the BOS/EOS tokens' text, for chat templates that spell them out
    eos_text: str | None

    def tokenize(self, text: str) -> list[int]: ...

    def generate(
        self, slot: int, job: GenerationJob, cancel: threading.Event, sink: TokenSink
    ) -> Outcome: ...

    def close(self) -> None: ...


def gpu_offload_supported() -> bool:
    return bool(lc.llama_supports_gpu_offload())


def default_threads(slots: int) -> int:
    # llama-cpp-python's own default is half the cores; split them between slots.
    return max(1, (os.cpu_count() or 2) // 2 // max(1, slots)) or 1


class LlamaEngine:
    """`InferenceEngine` over llama.cpp. Create with `LlamaEngine.load(...)`; not thread-safe per
    slot: the caller runs at most one generation per slot at a time."""

    def __init__(
        self, model: Any, contexts: list[Any], model_path: Path, n_ctx: int, n_batch: int
    ) -> None:
        self._model = model
        self._vocab = lc.llama_model_get_vocab(model)
        self._contexts = contexts
        self._n_batch = n_batch
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.slots = len(contexts)
        self.metadata = _read_metadata(model)
        self.bos_text = self._token_text(lc.llama_vocab_bos(self._vocab))
        self.eos_text = self._token_text(lc.llama_vocab_eos(self._vocab))

    def _token_text(self, token: int) -> str | None:
        if token < 0:
            return None
        text = lc.llama_vocab_get_text(self._vocab, token)
        return text.decode(errors="replace") if text else None

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        backend: Backend = "cpu",
        n_ctx: int = 4096,
        slots: int = 1,
        threads: int | None = None,
        n_batch: int = 512,
    ) -> LlamaEngine:
        quiet = logging.getLogger("llama-cpp-python")
        if quiet.level == logging.NOTSET:  # llama.cpp's chatter only when asked for
            quiet.setLevel(logging.ERROR)
        lc.llama_backend_init()
        mparams = lc.llama_model_default_params()
        mparams.n_gpu_layers = 0 if backend == "cpu" else 999
        model = lc.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise EngineError(f"llama.cpp could not load {path} (not a valid GGUF model?)")
        n_threads = threads or default_threads(slots)
        contexts = []
        try:
            for _ in range(slots):
                cparams = lc.llama_context_default_params()
                cparams.n_ctx = n_ctx
                cparams.n_batch = min(n_batch, n_ctx)
                cparams.n_ubatch = min(n_batch, n_ctx)
                cparams.n_seq_max = 1
                # Flash attention measured slower on CPU for small heads; GPUs decide themselves.
                cparams.flash_attn_type = (
                    lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
                    if backend == "cpu"
                    else lc.LLAMA_FLASH_ATTN_TYPE_AUTO
                )
                cparams.n_threads = n_threads
                cparams.n_threads_batch = n_threads
                ctx = lc.llama_init_from_model(model, cparams)
                if not ctx:
                    raise EngineError(f"llama.cpp could not create a context of {n_ctx} tokens")
                contexts.append(ctx)
        except BaseException:
            for ctx in contexts:
                lc.llama_free(ctx)
            lc.llama_model_free(model)
            raise
        return cls(model, contexts, path, n_ctx, min(n_batch, n_ctx))

    def close(self) -> None:
        for ctx in self._contexts:
            lc.llama_free(ctx)
        self._contexts = []
        if self._model:
            lc.llama_model_free(self._model)
            self._model = None

    def tokenize(self, text: str) -> list[int]:
        data = text.encode()
        cap = len(data) + 8
        buf = (lc.llama_token * cap)()
        n = lc.llama_tokenize(self._vocab, data, len(data), buf, cap, True, True)
        if n < 0:  # buffer too small: llama.cpp says how many are needed
            cap = -n
            buf = (lc.llama_token * cap)()
            n = lc.llama_tokenize(self._vocab, data, len(data), buf, cap, True, True)
        return list(buf[:n])

    def generate(
        self, slot: int, job: GenerationJob, cancel: threading.Event, sink: TokenSink
    ) -> Outcome:
        ctx = self._contexts[slot]
        # Metadata only: positions restart at 0, so stale K/V data is never read.
        lc.llama_memory_clear(lc.llama_get_memory(ctx), False)
        ban = self._eog_tokens() if job.ignore_eos else ()
        sampler = _make_sampler(job.sampling, lc.llama_vocab_n_tokens(self._vocab), ban)
        try:
            self._decode_prompt(ctx, job.prompt_tokens)
            return self._token_loop(ctx, sampler, job, cancel, sink)
        finally:
            lc.llama_sampler_free(sampler)

    def _eog_tokens(self) -> tuple[int, ...]:
        ids = (lc.llama_vocab_eos(self._vocab), lc.llama_vocab_eot(self._vocab))
        return tuple(i for i in ids if i >= 0)

    def _decode_prompt(self, ctx: Any, tokens: Sequence[int]) -> None:
        n = len(tokens)
        arr = (lc.llama_token * n)(*tokens)
        size = ctypes.sizeof(lc.llama_token)
        for off in range(0, n, self._n_batch):
            m = min(self._n_batch, n - off)
            chunk = (lc.llama_token * m).from_buffer(arr, off * size)
            if lc.llama_decode(ctx, lc.llama_batch_get_one(chunk, m)) != 0:
                raise EngineError("llama_decode failed on the prompt")

    def _token_loop(
        self,
        ctx: Any,
        sampler: Any,
        job: GenerationJob,
        cancel: threading.Event,
        sink: TokenSink,
    ) -> Outcome:
        vocab = self._vocab
        one = (lc.llama_token * 1)()
        buf = ctypes.create_string_buffer(_PIECE_BUF)
        text = TextStream(job.stops)
        # Local names: this loop runs once per token; attribute lookups add up.
        sample, is_eog, to_piece = (
            lc.llama_sampler_sample,
            lc.llama_vocab_is_eog,
            lc.llama_token_to_piece,
        )
        decode, batch_one, now, emit = (
            lc.llama_decode,
            lc.llama_batch_get_one,
            time.perf_counter,
            sink.token,
        )
        produced = 0
        generated: list[int] = []
        first: float | None = None
        reason: StopReason = "MAX_TOKENS"
        while produced < job.max_tokens:
            if cancel.is_set():
                reason = "CANCELLED"
                break
            tok = sample(sampler, ctx, -1)
            if is_eog(vocab, tok):
                reason = "EOS"
                break
            n = to_piece(vocab, tok, buf, _PIECE_BUF, 0, False)
            generated.append(tok)
            produced += 1
            if first is None:
                first = now()
            # A piece longer than the buffer (rare: long whitespace runs) comes back negative.
            piece = text.feed(buf.raw[:n] if n >= 0 else self.piece(tok))
            if piece:
                emit(piece)
            if text.stopped:
                reason = "STOP_SEQUENCE"
                break
            if produced == job.max_tokens:
                break
            one[0] = tok
            if decode(ctx, batch_one(one, 1)) != 0:
                raise EngineError("llama_decode failed during generation")
        if reason in ("MAX_TOKENS", "EOS"):
            tail = text.finish()
            if tail:
                emit(tail)
        return Outcome(reason, produced, first, now() if produced else None, tuple(generated))

    def piece(self, token: int) -> bytes:
        """The bytes of one token, as the token loop sees them."""
        size = _PIECE_BUF
        while True:
            buf = ctypes.create_string_buffer(size)
            n = lc.llama_token_to_piece(self._vocab, token, buf, size, 0, False)
            if n >= 0:
                return buf.raw[:n]
            size = -n


def _make_sampler(s: Sampling, n_vocab: int, ban: Sequence[int] = ()) -> Any:
    params = lc.llama_sampler_chain_default_params()
    params.no_perf = True
    chain = lc.llama_sampler_chain_init(params)
    add = lc.llama_sampler_chain_add
    if ban:
        biases = (lc.llama_logit_bias * len(ban))(
            *[lc.llama_logit_bias(t, float("-inf")) for t in ban]
        )
        add(chain, lc.llama_sampler_init_logit_bias(n_vocab, len(ban), biases))
    if s.repeat_penalty != 1.0:
        add(chain, lc.llama_sampler_init_penalties(n_vocab, 64, s.repeat_penalty, 0.0, 0.0))
    if s.temperature <= 0.0:
        add(chain, lc.llama_sampler_init_greedy())
        return chain
    if s.top_k > 0:
        add(chain, lc.llama_sampler_init_top_k(s.top_k))
    if s.top_p < 1.0:
        add(chain, lc.llama_sampler_init_top_p(s.top_p, 1))
    if s.min_p > 0.0:
        add(chain, lc.llama_sampler_init_min_p(s.min_p, 1))
    add(chain, lc.llama_sampler_init_temp(s.temperature))
    seed = s.seed if s.seed is not None else int.from_bytes(os.urandom(4), "little")
    add(chain, lc.llama_sampler_init_dist(seed))
    return chain


def _read_metadata(model: Any) -> dict[str, str]:
    out: dict[str, str] = {}
    buf = ctypes.create_string_buffer(1 << 16)
    key = ctypes.create_string_buffer(256)
    for i in range(lc.llama_model_meta_count(model)):
        if lc.llama_model_meta_key_by_index(model, i, key, 256) < 0:
            continue
        n = lc.llama_model_meta_val_str_by_index(model, i, buf, len(buf))
        if n >= 0:
            out[key.value.decode(errors="replace")] = buf.value.decode(errors="replace")
    return out
