"""JSON-schema constrained decoding, llorch-workerd beside llama.cpp's llama-server (WRK-130).

Both servers load the same model with the same threads and 4 slots (`--slots 4` / `-np 4`) and
get the same chat prompt, greedy (temperature 0), constrained per request by the same JSON schema
(ours: `/execute` `json_schema`; theirs: `/completion` `json_schema`, converted by llama.cpp's own
converter). Each server runs alone, in alternating order round after round, once with `--threads`
on both and once with each program's default threads. Per server and round:

- `json_tok_s`: one constrained stream's decode rate (first token to last), ending at EOS when the
  schema is complete; `json_tokens`: the tokens it decoded (each server reports its own count);
- `free_tok_s`: the same prompt unconstrained with `ignore_eos`, for exactly `json_tokens` tokens;
- `json4_tok_s`: aggregate tokens/s of 4 constrained streams sent together (first request sent to
  last token); `json4_tokens`: their tokens;
- `invalid`: outputs of the round that are not schema-valid JSON (checked with `jsonschema`).

Prints one JSON object with the medians and the ratios the issue asks for, per threads setting:
`json_decode_ratio` (ours / theirs, >= 1.0), `constrained_vs_free` (ours, >= 0.85) and
`json4_ratio` (ours / theirs, >= 1.0), plus the load average before and after; and the same
two with one grammar given to both (`same_grammar_decode_ratio`, `same_grammar_json4_ratio`: our
converter's GBNF as `grammar`, so both decode the same text; see SAME_GRAMMAR).

    python bench/structured.py [--model GGUF] [--llama-server PATH] [--threads 2] [--rounds 3]
        [--paired]
    python bench/structured.py --in-process [--threads N] [--rounds 3]

`--paired` starts both servers at once (the idle one sleeps) and alternates them round by round,
seconds apart instead of a restart apart: this VM's speed drifts 10-15% over a minute (see
`bench/peer.py --paired`).

`--in-process` measures only our engine, without HTTP: constrained, then free for as many
tokens, then free with `top_logprobs` 20 (WRK-134), with the process's CPU microseconds per token
(less disturbed by other load than wall time). llama-server is found as `bench/peer.py` says (its
docstring tells how to build it); without one the side-by-side run prints `{"skipped": ...}`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import jsonschema

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.peer import (  # noqa: E402
    Ours,
    Server,
    Stream,
    Theirs,
    aggregate_rate,
    decode_rate,
    find_llama_server,
    together,
)
from worker.engine import default_threads  # noqa: E402
from worker.structured import schema_to_grammar  # noqa: E402

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
# Ends at EOS once the schema is complete (~150 tokens on SmolLM2); the cap only guards a runaway.
JSON_MAX_TOKENS = 1024
CONSTRAINED = {"json_schema": SCHEMA, "ignore_eos": False}
# The same GBNF to both servers: our converter's grammar (worker/structured.py). llama-server's
# own converter allows newlines and indents between tokens, ours one optional space, so with
# `json_schema` the two decode different texts (about 230 and 150 tokens here); with this one
# grammar both decode the same text, and the ratio is the engines' alone.
SAME_GRAMMAR = {"grammar": schema_to_grammar(SCHEMA), "ignore_eos": False}
SLOTS = 4


def _valid(text: str) -> bool:
    try:
        jsonschema.validate(json.loads(text), SCHEMA)
    except (ValueError, jsonschema.ValidationError):
        return False
    return True


def measure(server: Server, client: httpx.Client, url: str) -> dict[str, float]:
    """One round on a started server (see the module's docstring for the figures)."""
    server.complete(client, url, PROMPT, JSON_MAX_TOKENS, CONSTRAINED)  # warm-up, grammar too
    js = server.complete(client, url, PROMPT, JSON_MAX_TOKENS, CONSTRAINED)
    free = server.complete(client, url, PROMPT, js.tokens)
    four: list[Stream] = together(
        SLOTS, lambda c, _i: server.complete(c, url, PROMPT, JSON_MAX_TOKENS, CONSTRAINED)
    )
    same = server.complete(client, url, PROMPT, JSON_MAX_TOKENS, SAME_GRAMMAR)
    same4: list[Stream] = together(
        SLOTS, lambda c, _i: server.complete(c, url, PROMPT, JSON_MAX_TOKENS, SAME_GRAMMAR)
    )
    invalid = sum(not _valid(s.text) for s in [js, *four, same, *same4])
    if invalid:
        print(f"{server.name}: not schema-valid: {js.text!r}", file=sys.stderr)
    return {
        "json_tok_s": decode_rate(js),
        "json_tokens": js.tokens,
        "free_tok_s": decode_rate(free),
        "free_tokens": free.tokens,
        "json4_tok_s": aggregate_rate(four),
        "json4_tokens": sum(s.tokens for s in four),
        "same_tok_s": decode_rate(same),
        "same_tokens": same.tokens,
        "same4_tok_s": aggregate_rate(same4),
        "same4_tokens": sum(s.tokens for s in same4),
        "invalid": invalid,
    }


def _rounds(
    args: argparse.Namespace,
    label: str,
    servers: list[Server],
    runs: dict[str, list[dict[str, float]]],
    urls: dict[str, str] | None,
) -> None:
    """`--rounds` rounds, the servers in alternating order; each started for its round, or
    already up at `urls` (`--paired`)."""
    for r in range(args.rounds):
        for server in servers if r % 2 == 0 else list(reversed(servers)):
            with contextlib.ExitStack() as stack:
                url = urls[server.name] if urls else stack.enter_context(server.start(SLOTS))
                client = stack.enter_context(httpx.Client(timeout=600))
                runs[server.name].append(measure(server, client, url))
            # Progress on stderr: a run cut short still leaves its rounds.
            line = {"threads": label, "round": r, server.name: runs[server.name][-1]}
            print(json.dumps(line), file=sys.stderr, flush=True)


def side_by_side(args: argparse.Namespace, binary: Path) -> dict[str, Any]:
    result: dict[str, Any] = {
        "bench": "structured",
        "model": args.model.name,
        "rounds": args.rounds,
        "slots": SLOTS,
        "cores": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
    }
    settings: list[tuple[str, int | None]] = [(f"threads_{args.threads}", args.threads)]
    if not args.no_default_threads:
        settings.append(("threads_default", None))
    with tempfile.TemporaryDirectory(prefix="llorch-structured-") as tmp:
        logs = Path(tmp)
        for label, threads in settings:
            servers: list[Server] = [
                Ours(args.model, sys.executable, ROOT, threads, args.n_ctx, logs),
                Theirs(binary, args.model, threads, args.n_ctx, logs),
            ]
            runs: dict[str, list[dict[str, float]]] = {s.name: [] for s in servers}

            if args.paired:
                # Both up at once (the idle one sleeps), rounds seconds apart, not minutes
                # apart with a restart between: this VM's speed drifts 10-15% over a minute.
                with servers[0].start(SLOTS) as ours_url, servers[1].start(SLOTS) as theirs_url:
                    urls = {servers[0].name: ours_url, servers[1].name: theirs_url}
                    _rounds(args, label, servers, runs, urls)
            else:
                _rounds(args, label, servers, runs, None)
            med = {name: _median(rs) for name, rs in runs.items()}
            ours, theirs = med["llorch-workerd"], med["llama-server"]
            result[label] = {
                "json_decode_ratio": round(ours["json_tok_s"] / theirs["json_tok_s"], 3),
                "constrained_vs_free": round(ours["json_tok_s"] / ours["free_tok_s"], 3),
                "json4_ratio": round(ours["json4_tok_s"] / theirs["json4_tok_s"], 3),
                "same_grammar_decode_ratio": round(ours["same_tok_s"] / theirs["same_tok_s"], 3),
                "same_grammar_json4_ratio": round(ours["same4_tok_s"] / theirs["same4_tok_s"], 3),
                "llama_server_constrained_vs_free": round(
                    theirs["json_tok_s"] / theirs["free_tok_s"], 3
                ),
                "threads_used": {
                    "llorch-workerd": threads or default_threads(),
                    "llama-server": _llama_server_threads(logs),
                },
                "median": med,
                "runs": runs,
            }
    result["loadavg_after"] = os.getloadavg()
    return result


def _llama_server_threads(logs: Path) -> int | None:
    """The threads llama-server says it decodes with (its latest log in `logs`)."""
    for log in sorted(logs.glob("llama-server-*.log"), key=lambda p: p.stat().st_mtime)[::-1]:
        found = re.search(r"n_threads = (\d+)", log.read_text(errors="replace"))
        if found:
            return int(found.group(1))
    return None


def _median(rs: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rs), 2) for k in rs[0]}


def in_process(args: argparse.Namespace) -> dict[str, Any]:
    """Our engine alone, no HTTP: constrained, free, free with top_logprobs 20."""
    from shared.wire import TokenLogprob
    from worker.engine import GenerationJob, LlamaEngine, Outcome, Sampling

    class Sink:
        def token(self, text: str) -> None:
            pass

        def logprobs(self, entries: list[TokenLogprob]) -> None:
            pass

    def run(job: GenerationJob) -> tuple[Outcome, float]:
        cpu = time.process_time()
        outcome = engine.generate(job, threading.Event(), Sink())
        return outcome, time.process_time() - cpu

    def figures(samples: list[tuple[Outcome, float]]) -> dict[str, float]:
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

    engine = LlamaEngine.load(args.model, slots=1, n_ctx=4096, threads=args.threads)
    try:
        prompt = engine.tokenize(PROMPT)
        grammar = schema_to_grammar(SCHEMA)
        greedy = Sampling(temperature=0.0)
        modes: dict[str, list[tuple[Outcome, float]]] = {"json_schema": [], "free": [], "lp20": []}
        for _ in range(args.rounds):
            constrained = run(GenerationJob(prompt, JSON_MAX_TOKENS, greedy, grammar=grammar))
            n = constrained[0].tokens_out
            modes["json_schema"].append(constrained)
            modes["free"].append(run(GenerationJob(prompt, n, greedy, ignore_eos=True)))
            lp = GenerationJob(prompt, n, greedy, ignore_eos=True, logprobs=True, top_logprobs=20)
            modes["lp20"].append(run(lp))
        report: dict[str, Any] = {name: figures(s) for name, s in modes.items()}
        # Tokens the grammar rejected after the chain chose them, each costing a grammar pass
        # over the whole vocabulary (worker/constrained.py): the constrained path's slow case.
        resampled = engine._loop.constrained.resampled
        report["json_schema"]["resampled_per_run"] = resampled / args.rounds
        report["model"] = args.model.name
        report["loadavg"] = os.getloadavg()[0]
        return report
    finally:
        engine.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    ap.add_argument("--llama-server", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-ctx", type=int, default=2048, help="per slot")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument(
        "--no-default-threads", action="store_true", help="skip the default-threads runs"
    )
    ap.add_argument("--in-process", action="store_true", help="our engine only, no HTTP")
    ap.add_argument(
        "--paired", action="store_true", help="both servers up at once, rounds alternating"
    )
    args = ap.parse_args(argv)
    # A timeout's SIGTERM unwinds the servers' context managers instead of orphaning them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if not args.model.is_file():
        print(json.dumps({"bench": "structured", "skipped": f"model not found: {args.model}"}))
        return 0
    if args.in_process:
        print(json.dumps(in_process(args)))
        return 0
    binary = find_llama_server(args.llama_server)
    if binary is None:
        skipped = "llama-server not found (--llama-server; see bench/peer.py)"
        print(json.dumps({"bench": "structured", "skipped": skipped}))
        return 0
    print(json.dumps(side_by_side(args, binary), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
