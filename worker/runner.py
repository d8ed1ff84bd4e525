"""A worker's live state and the life of one job: wait for a slot, hand the job to the engine's
decode loop, stream its text as SSE bytes, finish with exactly one `end` or `error` event."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from shared.logs import FIELDS
from shared.problem import ContextLengthExceeded, Draining, InvalidParams, ModelUnavailable
from shared.sse import Last, encode_event, encode_tokens, encode_tokens_with_ids
from shared.wire import (
    TERMINAL_EVENTS,
    ChoiceEnd,
    EmbeddingsStatus,
    EventName,
    Health,
    JobEndData,
    JobErrorData,
    JobStartedData,
    JobTokenData,
    PrefixCacheStats,
    StopReason,
    TokenData,
    TokenLogprob,
    WorkerStatus,
)
from worker.engine import GenerationJob, InferenceEngine, Outcome, Sampling, TokenSink
from worker.jobs import Job, JobTable, TokenChannel
from worker.metrics import WorkerMetrics
from worker.params import ExecuteRequest
from worker.settings import WorkerSettings
from worker.slots import SlotPool, Ticket
from worker.structured import SchemaError, nesting_problem, schema_to_grammar

STARTED_WITHIN_S = 0.05
log = logging.getLogger("llorch.worker")


@dataclass(frozen=True, slots=True)
class Prompt:
    """A request's prompt, tokenized, and the stop strings its chat template adds."""

    tokens: list[int]
    stops: tuple[str, ...]
    grammar: str | None = None  # the request's grammar or converted schema, known to parse


@dataclass(eq=False)
class WorkerState:
    settings: WorkerSettings
    pool: SlotPool
    executor: ThreadPoolExecutor
    tokenizer: ThreadPoolExecutor
    metrics: WorkerMetrics
    jobs: JobTable = field(default_factory=JobTable)
    engine: InferenceEngine | None = None
    status: WorkerStatus = "loading"
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def create(cls, settings: WorkerSettings) -> WorkerState:
        pool = SlotPool(settings.slots, settings.max_queue)
        # The decode loop has its own thread; this executor runs tokenization-free side work
        # (embeddings) off the event loop.
        executor = ThreadPoolExecutor(2, thread_name_prefix="llorch-embed")
        # Rendering chat templates and tokenizing (a prompt may be 262,144 characters) would
        # pause every stream if done on the event loop. llama.cpp's tokenizer releases the GIL,
        # and two threads let a short prompt pass a long one.
        tokenizer = ThreadPoolExecutor(2, thread_name_prefix="llorch-tokenize")
        state = cls(settings, pool, executor, tokenizer, WorkerMetrics(settings.slots))
        state.metrics.watch(lambda: pool.busy, lambda: pool.queued, state.cached_tokens)
        state.idle.set()
        return state

    def health(self) -> Health:
        s = self.settings
        return {
            "status": self.status,
            "model": s.model_name,
            "backend": s.backend,
            "slots_total": self.pool.total,
            "slots_busy": self.pool.busy,
            "queued": self.pool.queued,
            "n_ctx": s.n_ctx,
            "worker_id": s.worker_id,
            "prefix_cache": self.cache_view(),
            "embeddings": self.embeddings_view(),
        }

    def cached_tokens(self) -> int:
        return self.engine.cached_tokens() if self.engine is not None else 0

    def cache_view(self) -> PrefixCacheStats:
        """Prefix-cache use since start (WRK-103)."""
        if self.engine is None:
            return {
                "lookups": 0,
                "hits": 0,
                "tokens_reused": 0,
                "prompt_tokens": 0,
                "cached_tokens": 0,
            }
        c = self.engine.cache_stats()
        return {
            "lookups": c.lookups,
            "hits": c.hits,
            "tokens_reused": c.tokens_reused,
            "prompt_tokens": c.prompt_tokens,
            "cached_tokens": self.engine.cached_tokens(),
        }

    def embeddings_view(self) -> EmbeddingsStatus:
        """Whether this model embeds, and how (WRK-111)."""
        if self.engine is None:
            return {"available": False, "pooling": None, "reason": f"the model is {self.status}"}
        e = self.engine.embeddings
        return {"available": e.available, "pooling": e.pooling, "reason": e.reason}

    async def prepare(self, req: ExecuteRequest) -> Prompt:
        """The request's prompt as tokens: the chat template rendered and the text tokenized in
        the tokenizer's threads, never on the event loop (WRK-031). Refuses what `admit` would
        refuse before the model is ready, without the work."""
        engine = self._ready_engine()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.tokenizer, self._tokenize, engine, req)

    def _tokenize(self, engine: InferenceEngine, req: ExecuteRequest) -> Prompt:
        grammar = _grammar(engine, req)
        text, template_stops = self._prompt_text(engine, req)
        return Prompt(engine.tokenize(text), template_stops, grammar)

    def _ready_engine(self) -> InferenceEngine:
        if self.status == "draining":
            raise Draining("the worker is shutting down", retry_after_ms=1000)
        if self.engine is None or self.status != "ready":
            raise ModelUnavailable(f"the model is {self.status}", retry_after_ms=1000)
        return self.engine

    def admit(self, req: ExecuteRequest, prompt: Prompt) -> tuple[Job, Ticket]:
        """Everything that can refuse a prepared request, done before the stream starts."""
        engine = self._ready_engine()  # again: the state may have changed while tokenizing
        n = len(prompt.tokens) + len(req.resume_tokens)
        if any(t >= engine.n_vocab for t in req.resume_tokens):
            message = f"token ids must be below this model's vocabulary size ({engine.n_vocab})"
            raise InvalidParams(message, errors=[{"field": "resume_tokens", "message": message}])
        if n + req.gen.max_tokens > engine.n_ctx:
            raise ContextLengthExceeded(
                f"prompt ({n} tokens) + max_tokens ({req.gen.max_tokens}) exceeds the "
                f"context of {engine.n_ctx} tokens",
                errors=[{"field": "max_tokens", "message": "prompt + max_tokens exceeds n_ctx"}],
            )
        if req.n > self.pool.total:
            message = f"n ({req.n}) exceeds this worker's {self.pool.total} slots"
            raise InvalidParams(message, errors=[{"field": "n", "message": message}])
        ticket = self.pool.reserve_n(req.n)
        try:
            job = self.jobs.add(req.job_id)
        except BaseException:
            ticket.release()
            raise
        job.ticket = ticket
        self.idle.clear()
        return job, ticket

    def _prompt_text(
        self, engine: InferenceEngine, req: ExecuteRequest
    ) -> tuple[str, tuple[str, ...]]:
        if req.gen.prompt is not None:
            return req.gen.prompt, ()
        from shared.prompt_constructor import PromptError, build_prompt

        assert req.gen.messages is not None
        try:
            prompt = build_prompt(
                req.gen.messages,
                req.template,
                metadata=engine.metadata,
                bos_token=engine.bos_text,
                eos_token=engine.eos_text,
                tools=req.gen.tools,
            )
        except PromptError as e:
            raise InvalidParams(str(e), errors=[{"field": e.field, "message": e.reason}]) from e
        return prompt.text, tuple(prompt.stop)

    def finish(self, job: Job) -> None:
        job.state = "finished"
        self.jobs.remove(job)
        if not len(self.jobs):
            self.idle.set()


def _grammar(engine: InferenceEngine, req: ExecuteRequest) -> str | None:
    """The GBNF that constrains the job, converted and parsed here, in the tokenizer's threads,
    so a bad one is a 400 before any slot is taken (WRK-130, WRK-131)."""
    if req.json_schema is not None:
        field = "json_schema"
        try:
            grammar = schema_to_grammar(req.json_schema)
        except SchemaError as e:
            message = str(e)
            raise InvalidParams(
                f"json_schema: {message}", errors=[{"field": field, "message": message}]
            ) from None
    elif req.grammar is not None:
        field, grammar = "grammar", req.grammar
    else:
        return None
    problem = nesting_problem(grammar) or engine.grammar_error(grammar)
    if problem is not None:
        raise InvalidParams(f"{field}: {problem}", errors=[{"field": field, "message": problem}])
    return grammar


async def stream_job(
    state: WorkerState,
    req: ExecuteRequest,
    job: Job,
    ticket: Ticket,
    tokens: list[int],
    template_stops: tuple[str, ...],
    received_at: float,
    prompt_grammar: str | None = None,
) -> AsyncIterator[bytes]:
    """The SSE body of one job. Cancellation (client gone) stops the token loop at its next
    token; the slot is released when the loop's thread returns, not when this generator ends."""
    loop = asyncio.get_running_loop()
    engine = state.engine
    assert engine is not None
    seq = 0
    future: asyncio.Future[Outcome] | None = None
    handed = False

    def event(name: EventName, data: JobStartedData | JobEndData | JobErrorData) -> bytes:
        nonlocal seq
        seq += 1
        frame = encode_event(name, data, seq - 1)
        return Last(frame) if name in TERMINAL_EVENTS else frame

    def shutdown_error() -> bytes:
        """The worker is stopping (SIGTERM/SIGINT): not the client's cancel, so the stream ends
        in a retriable error, which an orchestrator retries elsewhere or fails (WRK-005)."""
        state.metrics.jobs.labels("WORKER_RESET").inc()
        message = "the worker is shutting down"
        error: JobErrorData = {"code": "WORKER_RESET", "message": message, "retriable": True}
        return event("error", error)

    def on_done(_: object) -> None:
        ticket.release()
        state.finish(job)

    def close_channel(_: object) -> None:  # on the decode thread: wakes the stream at the end
        channel.close()

    try:
        slot = await ticket.slot()  # admission only: the engine picks the sequence (its cache)
        state.metrics.queue_wait.observe(time.perf_counter() - received_at)
        if job.shutdown:
            yield shutdown_error()
            return
        if slot is None or job.cancelled:
            yield event("end", _end(0, None, None, received_at, "CANCELLED", len(tokens)))
            return
        job.state = "running"
        gen = req.gen
        if req.n > 1:
            # stream_choices hands the job to the engine at once and frees the slots when
            # every choice has ended there, not when this body ends (the client may go first).
            handed = True
            async for frame in stream_choices(
                state, req, job, ticket, tokens, template_stops, received_at, prompt_grammar
            ):
                yield frame
            return
        tokens = [*tokens, *req.resume_tokens]  # WRK-160: prefilled after the prompt
        work = GenerationJob(
            tokens,
            gen.max_tokens,
            Sampling(
                gen.temperature, gen.top_p, gen.top_k, gen.min_p, gen.repeat_penalty, gen.seed
            ),
            gen.stop + template_stops,
            req.ignore_eos,
            prompt_grammar,
            req.logprobs,
            req.top_logprobs,
            len(req.resume_tokens),
            req.token_ids,
        )
        channel = TokenChannel(loop)
        submitted = engine.submit(work, job.stop, channel)
        submitted.add_done_callback(close_channel)
        future = asyncio.wrap_future(submitted, loop=loop)
        future.add_done_callback(on_done)
        started: JobStartedData = {
            "job_id": job.id,
            "model": state.settings.model_name,
            "prompt_tokens": len(tokens),
        }
        head = event("started", started)
        # `started` travels with the first tokens when they come quickly: a write of its own
        # would compete with the decode loop for the GIL just as the prompt is processed. A
        # long prompt gets it on its own after STARTED_WITHIN_S.
        pieces = await channel.drain(STARTED_WITHIN_S)
        if pieces is None:
            yield head
            head = b""
            pieces = await channel.drain()
        i = req.resume_index
        while pieces and not job.cancelled:
            if req.token_ids and not req.logprobs:  # orchestratord's jobs: the hot path
                ids = channel.take_ids(len(pieces))
                chunk = encode_tokens_with_ids(pieces, ids, i, seq)
            elif req.logprobs or req.token_ids:
                lps = channel.take_logprobs(len(pieces)) if req.logprobs else None
                some = channel.take_ids(len(pieces)) if req.token_ids else None
                chunk = encode_logprob_tokens(pieces, lps, i, seq, some)
            else:
                chunk = encode_tokens(pieces, i, seq)
            seq += len(pieces)
            i += len(pieces)
            job.emitted = i - req.resume_index
            yield head + chunk
            head = b""
            pieces = await channel.drain()
        if head:
            yield head
        try:
            outcome = await future
        except Exception as e:  # the engine failed: report it, the slot is already free
            log.exception("job %s failed", job.id)
            state.metrics.jobs.labels("INTERNAL").inc()
            failed: JobErrorData = {"code": "INTERNAL", "message": f"inference failed: {e}"}
            yield event("error", failed)
            return
        if job.shutdown:
            yield shutdown_error()
            return
        reason: StopReason = "CANCELLED" if job.cancelled else outcome.stop_reason
        state.metrics.jobs.labels(reason).inc()
        state.metrics.tokens.inc(outcome.tokens_out)
        state.metrics.prompt_tokens.inc(len(tokens))
        state.metrics.prompt_tokens_cached.inc(outcome.prompt_tokens_cached)
        if outcome.first_token_at is not None:
            state.metrics.ttft.observe(outcome.first_token_at - received_at)
        end = _end(
            outcome.tokens_out,
            outcome.first_token_at,
            outcome.last_token_at,
            received_at,
            reason,
            len(tokens),
            outcome.prompt_tokens_cached,
        )
        log_job(job.id, end)
        yield event("end", end)
    finally:
        job.stop.set()  # the client may be gone: the decode loop ends the job at its next step
        if future is None and not handed:  # never reached the decode loop
            ticket.release()
            state.finish(job)


async def stream_choices(
    state: WorkerState,
    req: ExecuteRequest,
    job: Job,
    ticket: Ticket,
    tokens: list[int],
    template_stops: tuple[str, ...],
    received_at: float,
    prompt_grammar: str | None,
) -> AsyncIterator[bytes]:
    """The body of an n > 1 job after its slots are granted (WRK-140): `started`, `token` events
    that carry their choice's `index`, one `end` with each choice's outcome. Choice k samples
    with seed + k (OpenAI does not say; this makes a seeded request reproducible)."""
    loop = asyncio.get_running_loop()
    engine = state.engine
    assert engine is not None
    gen = req.gen
    works = [
        GenerationJob(
            tokens,
            gen.max_tokens,
            Sampling(
                gen.temperature,
                gen.top_p,
                gen.top_k,
                gen.min_p,
                gen.repeat_penalty,
                None if gen.seed is None else gen.seed + k,
            ),
            gen.stop + template_stops,
            req.ignore_eos,
            prompt_grammar,
            req.logprobs,
            req.top_logprobs,
        )
        for k in range(req.n)
    ]
    channel = TokenChannel(loop)
    sinks: list[TokenSink] = [_ChoiceSink(channel, k) for k in range(req.n)]
    submitted = engine.submit_n(works, job.stop, sinks)

    def close_channel(_: object) -> None:  # on the decode thread, after the last choice ends
        if all(f.done() for f in submitted):
            channel.close()

    for f in submitted:
        f.add_done_callback(close_channel)
    futures = [asyncio.wrap_future(f, loop=loop) for f in submitted]
    done = asyncio.gather(*futures, return_exceptions=True)

    def on_done(_: object) -> None:
        ticket.release()
        state.finish(job)

    done.add_done_callback(on_done)
    seq = 0
    started: JobStartedData = {
        "job_id": job.id,
        "model": state.settings.model_name,
        "prompt_tokens": len(tokens),
    }
    yield encode_event("started", started, seq)
    seq += 1
    counts = [0] * req.n
    try:
        pieces = await channel.drain()
        while pieces and not job.cancelled:
            indexes = channel.take_indexes(len(pieces))
            lps = channel.take_logprobs(len(pieces)) if req.logprobs else None
            frames = []
            for k, (t, index) in enumerate(zip(pieces, indexes, strict=True)):
                data: TokenData = {"t": t, "i": counts[index], "index": index}
                if lps is not None:
                    data["logprobs"] = lps[k]
                counts[index] += 1
                frames.append(encode_event("token", data, seq))
                seq += 1
            job.emitted = sum(counts)
            yield b"".join(frames)
            pieces = await channel.drain()
        results = await done
    finally:
        job.stop.set()
    outcomes = [r for r in results if isinstance(r, Outcome)]
    if len(outcomes) != len(results) or job.shutdown:
        code = "WORKER_RESET" if job.shutdown else "INTERNAL"
        state.metrics.jobs.labels(code).inc()
        error: JobErrorData = {"code": code, "message": "inference failed"}
        if job.shutdown:
            error["retriable"] = True
        yield Last(encode_event("error", error, seq))
        return
    cancelled = job.cancelled
    choices: list[ChoiceEnd] = [
        {
            "index": k,
            "stop_reason": "CANCELLED" if cancelled else o.stop_reason,
            "tokens_out": o.tokens_out,
        }
        for k, o in enumerate(outcomes)
    ]
    firsts = [o.first_token_at for o in outcomes if o.first_token_at is not None]
    lasts = [o.last_token_at for o in outcomes if o.last_token_at is not None]
    total = sum(o.tokens_out for o in outcomes)
    reason = choices[0]["stop_reason"]
    state.metrics.jobs.labels(reason).inc()
    state.metrics.tokens.inc(total)
    state.metrics.prompt_tokens.inc(len(tokens))
    state.metrics.prompt_tokens_cached.inc(outcomes[0].prompt_tokens_cached)
    end = _end(
        total,
        min(firsts) if firsts else None,
        max(lasts) if lasts else None,
        received_at,
        reason,
        len(tokens),
        outcomes[0].prompt_tokens_cached,
    )
    end["choices"] = choices
    log_job(job.id, end)
    yield Last(encode_event("end", end, seq))


class _ChoiceSink:
    """Choice k's text into the job's one channel; called on the decode thread only, so the
    index and the piece land in the same order."""

    __slots__ = ("_channel", "_index")

    def __init__(self, channel: TokenChannel, index: int) -> None:
        self._channel = channel
        self._index = index

    def token(self, text: str) -> None:
        self._channel.index(self._index)
        self._channel.token(text)

    def logprobs(self, entries: list[TokenLogprob]) -> None:
        self._channel.logprobs(entries)


def encode_logprob_tokens(
    pieces: list[str],
    logprobs: list[list[TokenLogprob]] | None,
    first_index: int,
    first_id: int,
    ids: list[list[int]] | None = None,
) -> bytes:
    """`token` events that carry their tokens' logprobs (WRK-134) and/or ids (WRK-161, always
    the last member): the slower, general framing, only for jobs that asked."""
    frames = []
    for k, t in enumerate(pieces):
        data: JobTokenData = {"t": t, "i": first_index + k}
        if logprobs is not None:
            data["logprobs"] = logprobs[k]
        if ids is not None:
            data["ids"] = ids[k]
        frames.append(encode_event("token", data, first_id + k))
    return b"".join(frames)


def log_job(job_id: str, end: JobEndData) -> None:
    """One line per finished job: what an operator greps the worker's log for."""
    fields = {
        "job_id": job_id,
        "prompt_tokens": end["prompt_tokens"],
        "tokens": end["tokens_out"],
        "ttft_ms": end["ttft_ms"],
        "decode_ms": end["decode_time_ms"],
        "outcome": end["stop_reason"],
    }
    log.info(
        "job %s prompt_tokens=%s tokens=%s ttft_ms=%s decode_ms=%s outcome=%s",
        *fields.values(),
        extra={FIELDS: fields},
    )


def _end(
    tokens_out: int,
    first: float | None,
    last: float | None,
    received_at: float,
    reason: StopReason,
    prompt_tokens: int,
    prompt_tokens_cached: int = 0,
) -> JobEndData:
    return {
        "tokens_out": tokens_out,
        "prompt_tokens": prompt_tokens,
        "prompt_tokens_cached": prompt_tokens_cached,
        "ttft_ms": round((first - received_at) * 1000, 3) if first is not None else None,
        "decode_time_ms": round((last - first) * 1000, 3) if first and last else 0.0,
        "stop_reason": reason,
    }
