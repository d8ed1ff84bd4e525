"""The cost of constrained decoding and logprobs on our worker's engine (WRK-130, WRK-134).

In-process `LlamaEngine`, no HTTP: each round runs the same prompt constrained by a JSON schema,
then unconstrained for exactly as many tokens (`ignore_eos`), then unconstrained with logprobs
(`top_logprobs` 20), one after another under the same machine noise. Prints one JSON object:
per mode, the median tok/s (first token to end) and CPU microseconds per token of the whole
process (less disturbed by other load than wall time), and the load average.

    python bench/structured.py [--model GGUF] [--threads N] [--rounds 3]

(Skeleton: llama-server's side, `--json-schema` on the same prompt, is not measured yet.)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path
from typing import Any

from shared.wire import TokenLogprob
from worker.engine import GenerationJob, LlamaEngine, Outcome, Sampling
from worker.structured import schema_to_grammar

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
PROMPT = (
    "<|im_start|>user\nList twelve fruits with their colour as JSON.<|im_end|>\n"
    "<|im_start|>assistant\n"
)
SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "colour": {"type": "string"}},
        "required": ["name", "colour"],
    },
    "minItems": 12,
    "maxItems": 12,
}


class _Sink:
    def token(self, text: str) -> None:
        pass

    def logprobs(self, entries: list[TokenLogprob]) -> None:
        pass


def _run(engine: LlamaEngine, job: GenerationJob) -> tuple[Outcome, float]:
    cpu = time.process_time()
    outcome = engine.generate(job, threading.Event(), _Sink())
    return outcome, time.process_time() - cpu


def _figures(samples: list[tuple[Outcome, float]]) -> dict[str, float]:
    rates, cpu = [], []
    for o, cpu_s in samples:
        if o.first_token_at is not None and o.last_token_at is not None and o.tokens_out > 1:
            rates.append((o.tokens_out - 1) / (o.last_token_at - o.first_token_at))
        cpu.append(cpu_s * 1e6 / max(1, o.tokens_out))
    return {
        "tok_s": round(statistics.median(rates), 2) if rates else 0.0,
        "cpu_us_per_tok": round(statistics.median(cpu), 1),
        "tokens": samples[-1][0].tokens_out,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    engine = LlamaEngine.load(args.model, slots=1, n_ctx=4096, threads=args.threads)
    try:
        prompt = engine.tokenize(PROMPT)
        grammar = schema_to_grammar(SCHEMA)
        greedy = Sampling(temperature=0.0)
        modes: dict[str, list[tuple[Outcome, float]]] = {"json_schema": [], "free": [], "lp20": []}
        for _ in range(args.rounds):
            constrained = _run(engine, GenerationJob(prompt, 1024, greedy, grammar=grammar))
            n = constrained[0].tokens_out
            modes["json_schema"].append(constrained)
            modes["free"].append(_run(engine, GenerationJob(prompt, n, greedy, ignore_eos=True)))
            lp = GenerationJob(prompt, n, greedy, ignore_eos=True, logprobs=True, top_logprobs=20)
            modes["lp20"].append(_run(engine, lp))
        report: dict[str, Any] = {name: _figures(s) for name, s in modes.items()}
        report["model"] = args.model.name
        report["loadavg"] = os.getloadavg()[0]
        print(json.dumps(report))
    finally:
        engine.close()


if __name__ == "__main__":
    main()
