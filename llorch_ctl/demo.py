"""`make demo`: the whole local flow on the embedded tiny model.

Starts orchestratord and one llorch-workerd on loopback ports, waits for the worker to register,
submits a task through the Python SDK, prints its tokens as they stream, then shuts both down and
checks that no process is left behind.
"""

from __future__ import annotations

import argparse
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
    parser.add_argument("--model", type=Path, required=True, help="GGUF model to serve")
    parser.add_argument("--prompt", default="The quick brown fox")
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args(argv)
    if not args.model.is_file():
        sys.exit(f"[demo] model not found: {args.model} (make demo writes it)")

    from llorch_sdk import Client

    token = secrets.token_urlsafe(16)
    api_key = secrets.token_urlsafe(16)
    model_name = args.model.stem
    orch_port, worker_port = _free_port(), _free_port()
    orch_url = f"http://127.0.0.1:{orch_port}"
    with tempfile.TemporaryDirectory(prefix="llorch-demo-") as tmp:
        state = Path(tmp)
        orch_log, worker_log = state / "orchestratord.log", state / "worker.log"
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
        worker_args = [
            "worker",
            "--model",
            str(args.model),
            "--port",
            str(worker_port),
            "--token",
            token,
            "--orchestrator-url",
            orch_url,
            "--worker-id",
            "demo-worker",
            "--pool",
            "local",
            "--slots",
            "2",
        ]
        print(
            f"[demo] orchestratord on {orch_url}, worker on :{worker_port}, model {model_name}",
            file=sys.stderr,
        )
        with (
            _daemon("orchestratord", orch_args, orch_log) as orch,
            _daemon("llorch-workerd", worker_args, worker_log) as worker,
        ):
            _wait(
                "orchestratord",
                lambda: httpx.get(orch_url + "/health").status_code == 200,
                orch,
                orch_log,
            )
            client = Client(orch_url, api_key=api_key)
            admin = Client(orch_url, api_key=token)  # the registry takes the cluster token
            _wait(
                "the worker to register",
                lambda: any(w.get("state") == "ready" for w in admin.workers()),
                worker,
                worker_log,
            )
            print(f"[demo] worker registered; submitting a task: {args.prompt!r}", file=sys.stderr)
            started = time.perf_counter()
            stats: dict[str, object] = {}
            for event in client.stream(
                model=model_name, prompt=args.prompt, max_tokens=args.max_tokens, seed=42
            ):
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
                f"\n[demo] done: {stats.get('tokens_out')} tokens, stop {stats.get('stop_reason')}"
                f", ttft {stats.get('ttft_ms')} ms, {elapsed * 1000:.0f} ms in all",
                file=sys.stderr,
            )
            pids = [orch.pid, worker.pid]
    leftovers = [p for p in pids if _alive(p)]
    if leftovers:
        sys.exit(f"[demo] processes left behind: {leftovers}")
    print("[demo] clean shutdown: no process left behind", file=sys.stderr)
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


if __name__ == "__main__":
    sys.exit(main())
