"""The engine's vocabulary, shared by the decode loop, the engine and the HTTP side."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from shared.wire import Backend as Backend  # the wire's names (shared/wire.py), re-exported
from shared.wire import StopReason as StopReason
from shared.wire import TokenLogprob


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
    grammar: str | None = None  # GBNF, root rule `root`, already known to parse (WRK-130)
    logprobs: bool = False  # WRK-134: the sink must be a LogprobSink
    top_logprobs: int = 0
    # WRK-160: the last `resumed` of `prompt_tokens` are a generation this job continues (the
    # sampler, the detokenizer and the stop strings take them as generated, not as prompt).
    resumed: int = 0
    token_ids: bool = False  # WRK-161: the sink must be an IdSink


@dataclass(frozen=True, slots=True)
class Outcome:
    stop_reason: StopReason
    tokens_out: int
    first_token_at: float | None  # time.perf_counter() of the first generated token
    last_token_at: float | None
    tokens: tuple[int, ...] = ()  # the generated token ids, EOS excluded
    prompt_tokens_cached: int = 0  # prompt tokens whose K/V came from the prefix cache


class TokenSink(Protocol):
    """Receives text from the decode thread. Must be cheap and thread-safe."""

    def token(self, text: str) -> None: ...


@runtime_checkable
class LogprobSink(TokenSink, Protocol):
    """A sink for jobs that ask for logprobs: `logprobs` is called just before each `token` with
    the entries of the tokens whose text that piece carries (WRK-134)."""

    def logprobs(self, entries: list[TokenLogprob]) -> None: ...


@runtime_checkable
class IdSink(TokenSink, Protocol):
    """A sink for jobs that ask for token ids: `ids` is called just before each `token` with
    the ids of the tokens whose text that piece carries (WRK-161)."""

    def ids(self, tokens: list[int]) -> None: ...
