"""Worker streaming rate over HTTP vs llama-cpp-python's raw `Llama.generate()` loop.

Both run on the same model in the same run, interleaved, so machine noise hits both alike.
Prints one JSON object. Usage: python bench/worker_stream.py [--model PATH] [--reps N]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from httpx_sse import EventSource

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.testmodel import write_model
from tests.support import spawn_worker

LENGTHS = (64, 512, 2048)
PROMPT = "the quick brown fox"
SAMPLING = {"temperature": 0.8, "top_p": 0.95, "top_k": 40, "min_p": 0.05}


def stream_once(client: httpx.Client, url: str, n: int, seed: int) -> tuple[float, float]:
    """(end-to-end tok/s, decode tok/s) of one streamed generation, timed by the client:
    request to `end`, and first token event to `end` (the stream's own pace, without the
    request's fixed cost)."""
    body = {"prompt": PROMPT, "max_tokens": n, "seed": seed, "ignore_eos": True, **SAMPLING}
    t0 = time.perf_counter()
    first = 0.0
    tokens_out = 0
    with client.stream("POST", url + "/execute", json=body) as r:
        for sse in EventSource(r).iter_sse():
            if sse.event == "token" and not first:
                first = time.perf_counter()
            elif sse.event == "end":
                tokens_out = json.loads(sse.data)["tokens_out"]
    end = time.perf_counter()
    assert tokens_out == n, f"expected {n} tokens, got {tokens_out}"
    return n / (end - t0), (n - 1) / (end - first)


def raw_once(llm: Any, tokens: list[int], n: int, seed: int) -> tuple[float, float]:
    """(tok/s from the call, tok/s from the first token) of the raw loop."""
    llm.set_seed(seed)
    t0 = time.perf_counter()
    first = 0.0
    sampling = dict(
        temp=SAMPLING["temperature"],
        top_p=SAMPLING["top_p"],
        top_k=SAMPLING["top_k"],
        min_p=SAMPLING["min_p"],
    )
    # generate() never ends by itself; take exactly n tokens from it.
    for count, _ in enumerate(llm.generate(tokens, reset=True, **sampling), start=1):
        if count == 1:
            first = time.perf_counter()
        if count >= n:
            break
    end = time.perf_counter()
    return n / (end - t0), (n - 1) / (end - first)


def medians(samples: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(x[0] for x in samples), statistics.median(x[1] for x in samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", type=Path)
    parser.add_argument("--reps", type=int, default=9)
    args = parser.parse_args()
    logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
    from llama_cpp import Llama

    with tempfile.TemporaryDirectory() as tmp:
        model = (
            args.model
            if args.model and args.model.exists()
            else write_model(Path(tmp) / "llorch-tiny.gguf")
        )
        llm = Llama(model_path=str(model), n_ctx=4096, verbose=False)
        prompt_tokens = llm.tokenize(PROMPT.encode(), add_bos=True)
        results: dict[str, Any] = {"bench": "worker_stream", "model": model.name, "lengths": {}}
        # One client for the run, as an SDK keeps its connection; the worker's first request
        # and llama.cpp's first decode pay one-time costs, so both paths are warmed up first.
        with spawn_worker(model, Path(tmp)) as worker, httpx.Client(timeout=120) as client:
            for seed in range(3):
                stream_once(client, worker.url, 64, seed)
                raw_once(llm, prompt_tokens, 64, seed)
            for n in LENGTHS:
                stream, raw = [], []
                for rep in range(args.reps):
                    raw.append(raw_once(llm, prompt_tokens, n, rep))
                    stream.append(stream_once(client, worker.url, n, rep))
                s, r = medians(stream), medians(raw)
                results["lengths"][str(n)] = {
                    "stream_tok_s": round(s[0]),
                    "raw_generate_tok_s": round(r[0]),
                    "ratio_stream_over_raw": round(s[0] / r[0], 3),
                    "stream_decode_tok_s": round(s[1]),
                    "raw_decode_tok_s": round(r[1]),
                    "ratio_decode": round(s[1] / r[1], 3),
                }
        first, last = results["lengths"][str(LENGTHS[0])], results["lengths"][str(LENGTHS[-1])]
        results["stream_2048_over_64"] = round(last["stream_tok_s"] / first["stream_tok_s"], 3)
        results["raw_2048_over_64"] = round(
            last["raw_generate_tok_s"] / first["raw_generate_tok_s"], 3
        )
        print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
