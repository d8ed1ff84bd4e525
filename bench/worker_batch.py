"""llorch-workerd's batched decode rate at 1, 4 and 16 streams, for before/after comparisons.

Two ways, each run in a child process of the checkout being measured, so two checkouts
(`--checkout A --checkout B`) alternate round after round under the same machine noise:

- `engine`: the checkout's `LlamaEngine` in-process, no HTTP: what the decode loop alone costs;
- `http`: the checkout's `python -m worker` over loopback, streamed by a minimal asyncio client
  (raw sockets, no HTTP library: the client's own CPU is kept small on a shared machine).

Each figure: aggregate tok/s (first request sent to the last stream's end), the decode rate of a
single stream (first token to end), and CPU microseconds per generated token of the measured
process (the worker's, in `http` mode; the whole process's, in `engine` mode): CPU per token is
less disturbed by other load than wall time. The load average is printed with every round.

    python bench/worker_batch.py [--model GGUF] [--threads N] [--mode engine|http]
        [--streams 1,4,16] [--tokens 128] [--rounds 3]
        [--checkout DIR[:PYTHON]] [--checkout DIR[:PYTHON]]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / ".cache/models/llorch-tiny.gguf"


def _cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds run by the main thread (`main`: the event loop in the worker) and by all the
    others (`rest`: the decode thread and llama.cpp's), from the scheduler's nanosecond counters
    (Linux /proc/PID/task/TID/schedstat; /proc/PID/stat counts 10 ms ticks, too coarse)."""
    out = {"main": 0.0, "rest": 0.0}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ns = int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue
        out["main" if task.name == str(pid) else "rest"] += ns / 1e9
    return out


def _cpu_delta(before: dict[str, float], after: dict[str, float], tokens: int) -> dict[str, float]:
    """CPU microseconds per generated token: all threads, the main thread, the others."""
    us = 1e6 / tokens
    main = (after["main"] - before["main"]) * us
    rest = (after["rest"] - before["rest"]) * us
    return {"cpu_us_per_tok": main + rest, "main_us_per_tok": main, "rest_us_per_tok": rest}


# -- engine mode (runs inside the measured checkout) ----------------------------------------


def child_engine(model: Path, threads: int, streams: int, tokens: int) -> dict[str, Any]:
    import threading

    from worker.engine import GenerationJob, LlamaEngine, Sampling

    class Sink:
        def token(self, text: str) -> None:
            pass

    engine = LlamaEngine.load(model, n_ctx=2048, slots=streams, threads=threads)

    def run(n: int) -> tuple[float, list[Any]]:
        jobs = [
            GenerationJob(
                engine.tokenize(f"Story number {i}: once upon a time"),
                n,
                Sampling(temperature=0.0),
                (),
                True,
            )
            for i in range(streams)
        ]
        t0 = time.perf_counter()
        futures = [engine.submit(j, threading.Event(), Sink()) for j in jobs]
        return t0, [f.result() for f in futures]

    try:
        run(8)  # warm-up
        cpu0 = _cpu_s(os.getpid())
        t0, outs = run(tokens)
        cpu1 = _cpu_s(os.getpid())
    finally:
        engine.close()
    end = max(o.last_token_at for o in outs)
    total = sum(o.tokens_out for o in outs)
    single = outs[0]
    return {
        "tok_s": total / (end - t0),
        "stream_decode_tok_s": (single.tokens_out - 1)
        / (single.last_token_at - single.first_token_at),
        **_cpu_delta(cpu0, cpu1, total),
    }


# -- http mode -------------------------------------------------------------------------------


async def _stream(port: int, prompt: str, tokens: int) -> tuple[float, float, float, int]:
    """(sent, first token, end, tokens_out) of one /execute stream."""
    body = json.dumps(
        {"prompt": prompt, "max_tokens": tokens, "ignore_eos": True, "temperature": 0}
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = time.perf_counter()
    writer.write(
        b"POST /execute HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    first = 0.0
    data = bytearray()
    while chunk := await reader.read(65536):
        if not first and b"event: token" in chunk:
            first = time.perf_counter()
        data += chunk
    end = time.perf_counter()
    writer.close()
    text = data.decode(errors="replace")
    at = text.rfind("event: end\ndata: ")
    if at < 0:
        raise RuntimeError(f"no end event: {text[-500:]}")
    line = text[at + len("event: end\ndata: ") :].split("\n", 1)[0]
    return sent, first, end, int(json.loads(line)["tokens_out"])


async def _concurrent(
    port: int, streams: int, tokens: int
) -> list[tuple[float, float, float, int]]:
    return await asyncio.gather(
        *(_stream(port, f"Story number {i}: once upon a time", tokens) for i in range(streams))
    )


@contextlib.contextmanager
def _worker(checkout: Path, python: str, model: Path, threads: int, slots: int) -> Iterator[Any]:
    sys.path.insert(0, str(ROOT))
    from tests.support import free_port, wait_http_ready

    port = free_port()
    args = [python, "-m", "worker", "--model", str(model), "--port", str(port)]
    args += ["--slots", str(slots), "--threads", str(threads), "--n-ctx", "2048"]
    args += ["--max-queue", "64"]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(args, cwd=checkout, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_http_ready(f"http://127.0.0.1:{port}/health", proc, timeout=120, ready="ready")
            yield proc, port
        finally:
            proc.terminate()
            proc.wait(timeout=15)


def http_once(
    checkout: Path, python: str, model: Path, threads: int, streams: int, tokens: int
) -> dict[str, Any]:
    with _worker(checkout, python, model, threads, streams) as (proc, port):
        asyncio.run(_concurrent(port, streams, 8))  # warm-up
        cpu0 = _cpu_s(proc.pid)
        outs = asyncio.run(_concurrent(port, streams, tokens))
        cpu1 = _cpu_s(proc.pid)
    start = min(o[0] for o in outs)
    end = max(o[2] for o in outs)
    total = sum(o[3] for o in outs)
    _, first, last, n = outs[0]
    return {
        "tok_s": total / (end - start),
        "stream_decode_tok_s": (n - 1) / (last - first),
        **_cpu_delta(cpu0, cpu1, total),
    }


# -- driver ----------------------------------------------------------------------------------


def _checkout(spec: str) -> tuple[Path, str]:
    path, _, python = spec.partition(":")
    root = Path(path).resolve()
    return root, python or str(root / ".venv/bin/python")


def _measure(args: argparse.Namespace, root: Path, python: str, streams: int) -> dict[str, Any]:
    if args.mode == "http":
        return http_once(root, python, args.model, args.threads, streams, args.tokens)
    cmd = [python, str(Path(__file__).resolve()), "--child", "--model", str(args.model)]
    cmd += ["--threads", str(args.threads), "--tokens", str(args.tokens), "--streams", str(streams)]
    out = subprocess.run(
        cmd, cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--mode", choices=["engine", "http"], default="http")
    p.add_argument("--streams", default="1,4,16")
    p.add_argument("--tokens", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--checkout", action="append", default=[], help="DIR[:PYTHON], repeatable")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        sys.path.insert(0, os.getcwd())
        print(json.dumps(child_engine(args.model, args.threads, int(args.streams), args.tokens)))
        return 0
    checkouts = [_checkout(c) for c in args.checkout] or [(ROOT, sys.executable)]
    streams = [int(s) for s in args.streams.split(",")]
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {
        str(c[0]): {str(n): [] for n in streams} for c in checkouts
    }
    for r in range(args.rounds):
        order = checkouts if r % 2 == 0 else list(reversed(checkouts))
        for n in streams:
            for root, python in order:
                m = _measure(args, root, python, n)
                m["load1"] = os.getloadavg()[0]
                runs[str(root)][str(n)].append({k: round(v, 2) for k, v in m.items()})
    result = {
        "bench": "worker_batch",
        "mode": args.mode,
        "model": args.model.name,
        "threads": args.threads,
        "tokens": args.tokens,
        "rounds": args.rounds,
        "median": {
            root: {
                n: {k: round(statistics.median(x[k] for x in xs), 1) for k in xs[0]}
                for n, xs in by_n.items()
            }
            for root, by_n in runs.items()
        },
        "runs": runs,
    }
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
