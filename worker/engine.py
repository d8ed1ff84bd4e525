"""The inference engine: one GGUF model, one llama.cpp context, every slot in one batch.

Built on llama-cpp-python's C-level bindings (`llama_cpp.llama_*`), not its `Llama` class:
`create_completion(stream=True)` re-detokenizes the whole output every token (quadratic), and a
`Llama` object runs one sequence. Here the context holds `slots` sequences (`n_seq_max`, one KV
stream of `n_ctx` tokens each, as llama-server's `-np`), and one decode thread (worker/steploop.py)
advances all running jobs together in one `llama_batch` per step, with prompts prefilled in
bounded chunks between them (worker/batching.py). On a GPU this is the difference between one
stream's throughput and several: the device runs one batched decode instead of N queued ones.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Protocol

import llama_cpp as lc

from shared.cpus import physical_cores
from worker.batching import Batcher, Step
from worker.embeddings import MAX_EMBED_TOKENS, Embedder, EmbeddingSupport, embedding_support
from worker.hostcache import HostCache
from worker.kvblocks import DEFAULT_BLOCK_SIZE, BlockLedger
from worker.steploop import CacheStats, StepLoop, piece_reader
from worker.types import (
    Backend,
    EngineError,
    GenerationJob,
    Outcome,
    Sampling,
    StopReason,
    TokenSink,
)

__all__ = [
    "Backend",
    "EngineError",
    "GenerationJob",
    "InferenceEngine",
    "LlamaEngine",
    "Outcome",
    "Sampling",
    "StopReason",
    "TokenSink",
]

DEFAULT_CHUNK = 512
log = logging.getLogger("llorch.worker.engine")


class InferenceEngine(Protocol):
    """The seam between the HTTP worker and a model runtime."""

    model_path: Path
    n_ctx: int
    slots: int
    metadata: dict[str, str]
    bos_text: str | None  # the BOS/EOS tokens' text, for chat templates that spell them out
    eos_text: str | None
    embeddings: EmbeddingSupport
    ledger: BlockLedger  # what its KV cache holds, for orchestratord's index (WRK-170)
    n_vocab: int  # token ids run from 0 to n_vocab - 1 (resume_tokens are checked, WRK-160)

    def tokenize(self, text: str) -> list[int]: ...

    def grammar_error(self, grammar: str) -> str | None: ...

    def submit(
        self, job: GenerationJob, cancel: threading.Event, sink: TokenSink
    ) -> Future[Outcome]: ...

    def submit_n(
        self, jobs: list[GenerationJob], cancel: threading.Event, sinks: list[TokenSink]
    ) -> list[Future[Outcome]]: ...

    def cache_stats(self) -> CacheStats: ...

    def cached_tokens(self) -> int: ...

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]: ...

    @property
    def embed_max_tokens(self) -> int: ...

    def close(self) -> None: ...


def gpu_offload_supported() -> bool:
    return bool(lc.llama_supports_gpu_offload())


def default_threads() -> int:
    """The physical cores this process may run on, as llama.cpp's own default (WRK-150).

    On a host without SMT that is every CPU: a lone stream decodes up to twice as fast as on
    half of them when the machine is otherwise idle, and llama.cpp's per-operation barrier makes
    it slower when something else wants a core. Sharing a host between workers is the pool's
    business: `llorch-pool worker spawn` divides the cores among its workers (POOL-100)."""
    return physical_cores()


class LlamaEngine:
    """`InferenceEngine` over llama.cpp. Create with `LlamaEngine.load(...)`. Thread-safe:
    `submit` from any thread; at most `slots` jobs may be submitted and unfinished at once."""

    def __init__(
        self,
        model: Any,
        ctx: Any,
        model_path: Path,
        *,
        n_ctx: int,
        slots: int,
        chunk: int,
        threads: int,
        on_step: Callable[[Step], None] | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        cache_ram: int = 0,
    ) -> None:
        self._model = model
        self._ctx = ctx
        self._vocab = lc.llama_model_get_vocab(model)
        self._threads = threads
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.slots = slots
        self.chunk = chunk
        self.metadata = _read_metadata(model)
        self.bos_text = self._token_text(lc.llama_vocab_bos(self._vocab))
        self.eos_text = self._token_text(lc.llama_vocab_eos(self._vocab))
        self.embeddings = embedding_support(self.metadata)
        self._embedder: Embedder | None = None
        self._embedder_lock = threading.Lock()
        self.piece = piece_reader(self._vocab)
        self.n_vocab = int(lc.llama_vocab_n_tokens(self._vocab))
        self.ledger = BlockLedger(block_size)
        self.host_cache = HostCache(cache_ram, self.ledger) if cache_ram > 0 else None
        self._batcher = Batcher(slots, chunk, ledger=self.ledger, host=self.host_cache)
        self._loop = StepLoop(
            ctx, self._vocab, self._batcher, self._sampler_for, piece_reader(self._vocab), on_step
        )

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
        chunk: int = DEFAULT_CHUNK,
        on_step: Callable[[Step], None] | None = None,
        block_size: int = DEFAULT_BLOCK_SIZE,
        cache_ram: int = 0,
    ) -> LlamaEngine:
        quiet = logging.getLogger("llama-cpp-python")
        if quiet.level == logging.NOTSET:  # llama.cpp's chatter only when asked for
            quiet.setLevel(logging.ERROR)
        lc.llama_backend_init()
        mparams = lc.llama_model_default_params()
        # A GPU backend offloads every layer: the whole batched decode runs on the device.
        mparams.n_gpu_layers = 0 if backend == "cpu" else 999
        model = lc.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise EngineError(f"llama.cpp could not load {path} (not a valid GGUF model?)")
        n_threads = threads or default_threads()
        chunk = max(1, min(chunk, n_ctx))
        step_max = chunk + slots  # Batcher.max_step_tokens(): one step is one ubatch
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = n_ctx * slots
        cparams.n_seq_max = slots
        # One KV stream per sequence (llama-server -np without --kv-unified): attention reads
        # only the sequence's own stream, and a slot's context is n_ctx whatever the others do.
        cparams.kv_unified = False
        cparams.n_batch = step_max
        cparams.n_ubatch = step_max
        # Flash attention measured slower on CPU for small heads; GPUs decide themselves.
        cparams.flash_attn_type = (
            lc.LLAMA_FLASH_ATTN_TYPE_DISABLED if backend == "cpu" else lc.LLAMA_FLASH_ATTN_TYPE_AUTO
        )
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        ctx = lc.llama_init_from_model(model, cparams)
        if not ctx:
            lc.llama_model_free(model)
            raise EngineError(f"llama.cpp could not create a context of {slots} x {n_ctx} tokens")
        try:
            return cls(
                model,
                ctx,
                path,
                n_ctx=n_ctx,
                slots=slots,
                chunk=chunk,
                threads=n_threads,
                on_step=on_step,
                block_size=block_size,
                cache_ram=cache_ram,
            )
        except BaseException:
            lc.llama_free(ctx)
            lc.llama_model_free(model)
            raise

    def close(self) -> None:
        if self._model is None:
            return
        self._loop.close()
        if self._embedder is not None:
            self._embedder.close()
        lc.llama_free(self._ctx)
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

    def submit(
        self, job: GenerationJob, cancel: threading.Event, sink: TokenSink
    ) -> Future[Outcome]:
        """Queue a job for the next step; the future resolves when it ends (any reason)."""
        return self._loop.submit(job, cancel, sink)

    def submit_n(
        self, jobs: list[GenerationJob], cancel: threading.Event, sinks: list[TokenSink]
    ) -> list[Future[Outcome]]:
        """Choices of one prompt, prefilled once (WRK-140); one sequence each."""
        return self._loop.submit_n(jobs, cancel, sinks)

    def generate(self, job: GenerationJob, cancel: threading.Event, sink: TokenSink) -> Outcome:
        """`submit` and wait: for scripts and tests."""
        return self.submit(job, cancel, sink).result()

    def cache_stats(self) -> CacheStats:
        return self._loop.cache

    def cached_tokens(self) -> int:
        return self._batcher.cached_tokens

    @property
    def steps(self) -> int:
        return self._loop.steps

    def embed(self, inputs: Sequence[Sequence[int]]) -> list[list[float]]:
        """Pooled, normalized vectors; the embedding context is created on first use."""
        if not self.embeddings.available:
            raise EngineError(f"this model cannot embed: {self.embeddings.reason}")
        with self._embedder_lock:
            if self._embedder is None:
                self._embedder = Embedder(self._model, self.embeddings, self.n_ctx, self._threads)
        return self._embedder.embed(inputs)

    @property
    def embed_max_tokens(self) -> int:
        return min(self.n_ctx, MAX_EMBED_TOKENS)

    def grammar_error(self, grammar: str) -> str | None:
        """Why llama.cpp cannot use `grammar` (GBNF, start rule `root`), or None when it can.
        Parses it once, as the job's sampler will (WRK-130); safe on any thread."""
        sampler = lc.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
        if not sampler:
            return "is not valid GBNF with a 'root' rule (llama.cpp could not parse it)"
        lc.llama_sampler_free(sampler)
        return None

    def _sampler_for(self, job: GenerationJob) -> tuple[Any, int | None]:
        """The job's chain, and the seed its draws are keyed by when the decode loop draws
        (WRK-162: seeded, stochastic, no grammar; None: the chain samples)."""
        ban = self._eog_tokens() if job.ignore_eos else ()
        s = job.sampling
        own = s.seed is not None and s.temperature > 0.0 and job.grammar is None
        chain = _make_sampler(s, self.n_vocab, ban, draw=not own)
        return chain, s.seed if own else None

    def _eog_tokens(self) -> tuple[int, ...]:
        ids = (lc.llama_vocab_eos(self._vocab), lc.llama_vocab_eot(self._vocab))
        return tuple(i for i in ids if i >= 0)


def _make_sampler(
    s: Sampling,
    n_vocab: int,
    ban: Sequence[int] = (),
    *,
    draw: bool = True,
) -> Any:
    """llama.cpp's chain for `s`; without `draw`, the chain stops before the random draw (the
    decode loop draws, WRK-162)."""
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
    if not draw:
        return chain
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
