"""`worker spawn`: start a detached llorch-workerd, record it, wait until it is ready.

The worker runs in its own session (no controlling terminal, survives the SSH connection that
ran us), stdin from /dev/null, stdout and stderr appended to logs/<id>.log. The token travels in
the environment (LLORCH_CLUSTER_TOKEN), not on the command line that `ps` shows everyone.

The port is reserved by binding it: spawn listens on it itself and hands the listening socket to
the worker (`--listen-fd`), so no other process, and no concurrent spawn, can take it between
the choice and the worker's start; and spawn calls a worker ready only when `/health` answers
with the worker id it gave it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import filelock

from pool_ctl import backends, procs
from pool_ctl.catalog import Catalog
from pool_ctl.errors import BackendUnavailable, Conflict, InvalidInput, WorkerFailed
from pool_ctl.health import fetch
from pool_ctl.records import Records, WorkerRecord, check_worker_id
from pool_ctl.settings import Settings
from shared.auth import is_loopback
from shared.cpus import physical_cores

AUTO_PORT_RANGE = range(8001, 8200)
STOP_GRACE_S = 10.0


def reserve_port(host: str, port: int) -> socket.socket | None:
    """A socket listening on host:port (as uvicorn's, with SO_REUSEADDR), or None if taken.

    A listening socket holds the port against every other bind on Linux, SO_REUSEADDR or not.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(2048)
    except OSError:
        s.close()
        return None
    return s


def log_tail(path: Path, since: int = 0, lines: int = 15) -> str:
    """The last lines written to the log after byte offset `since`, joined into one line."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(since, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    kept = [line for line in text.splitlines()[-lines:] if line.strip()]
    return " | ".join(kept) or "(nothing in its log yet)"


def _live_ports(records: Records) -> set[int]:
    return {
        r["port"]
        for r in records.all()
        if procs.identify(r["pid"], r["start_time"], r["cmdline"]) == "ours"
    }


def thread_share(cores: int, running: int) -> int:
    """Threads for a new worker when none are given (POOL-100): an equal share of the host's
    physical cores among the workers running and this one, at least 1."""
    return max(1, cores // (running + 1))


def _running(records: Records) -> int:
    return sum(
        1
        for r in records.all()
        if procs.identify(r["pid"], r["start_time"], r["cmdline"]) == "ours"
    )


def _reserve(host: str, requested: int | None, taken: set[int]) -> socket.socket:
    """The listening socket of the chosen port; the caller owns (and closes) it."""
    if requested is not None:
        if not 1 <= requested <= 65535:
            raise InvalidInput(f"--port {requested} is out of range", "give 1-65535 or 'auto'")
        sock = None if requested in taken else reserve_port(host, requested)
        if sock is None:
            raise Conflict(
                f"port {requested} on {host} is in use",
                "pick another with --port N, or --port auto",
            )
        return sock
    for port in AUTO_PORT_RANGE:
        if port not in taken and (sock := reserve_port(host, port)) is not None:
            return sock
    raise Conflict(
        f"no free port in {AUTO_PORT_RANGE.start}-{AUTO_PORT_RANGE.stop - 1} on {host}",
        "stop some workers or give --port N",
    )


# The caller's variables that would silently configure the worker; only flags do.
_WORKER_ENV = ("LLORCH_CLUSTER_TOKEN", "LLORCH_ORCHESTRATOR_URL")


def _child_env(token: str | None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("LLORCH_WORKER_") and k not in _WORKER_ENV
    }
    env["PYTHONUNBUFFERED"] = "1"
    if token:
        env["LLORCH_CLUSTER_TOKEN"] = token
    return env


def _start(argv: list[str], log_path: Path, env: dict[str, str], cwd: Path) -> int:
    """posix_spawn the worker; fds marked inheritable (its listening socket) go with it."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    old_cwd = os.getcwd()
    try:
        os.chdir(cwd)  # posix_spawn has no cwd argument; the worker must not pin ours
        return os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.chdir(old_cwd)
        os.close(fd)


WILDCARDS = ("0.0.0.0", "::", "")


def _wildcard_advertise(host: str, port: int) -> str | None:
    # A worker listening on every address would advertise http://0.0.0.0:PORT, which no
    # orchestrator can reach; the host's name is the better guess.
    return f"http://{socket.getfqdn()}:{port}" if host in WILDCARDS else None


@contextlib.contextmanager
def _spawn_lock(path: Path) -> Iterator[None]:
    lock = filelock.FileLock(str(path), timeout=60)
    try:
        lock.acquire()
    except filelock.Timeout as e:
        raise Conflict(
            f"spawn lock {path} still held after 60s", "another spawn is running; retry later"
        ) from e
    try:
        yield
    finally:
        lock.release()


def _exit_status(pid: int) -> int | None:
    """Reap our child if it exited while we wait; its exit code, else None."""
    with contextlib.suppress(ChildProcessError):
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
    return None


def spawn(
    settings: Settings,
    backend: str,
    model_id: str,
    *,
    port: int | None = None,
    host: str = "127.0.0.1",
    slots: int = 1,
    n_ctx: int | None = None,
    threads: int | None = None,
    max_queue: int | None = None,
    orchestrator: str | None = None,
    token: str | None = None,
    worker_id: str | None = None,
    advertise_url: str | None = None,
    timeout: float = 120.0,
    extra_args: tuple[str, ...] = (),
    on_wait: Callable[[WorkerRecord], None] | None = None,
) -> WorkerRecord:
    """Start a worker for catalog model `model_id` on `backend`; return its record once ready."""
    # Everything the worker would refuse at start is refused here, before anything starts.
    if slots < 1:
        raise InvalidInput(f"--slots {slots} must be at least 1", "give --slots 1 or more")
    if n_ctx is not None and n_ctx < 64:
        raise InvalidInput(f"--n-ctx {n_ctx} must be at least 64", "give --n-ctx 64 or more")
    if threads is not None and threads < 1:
        raise InvalidInput(f"--threads {threads} must be at least 1", "give --threads 1 or more")
    if max_queue is not None and max_queue < 0:
        raise InvalidInput(f"--max-queue {max_queue} must be 0 or more", "give --max-queue 0+")
    if backend not in backends.BACKENDS:
        raise InvalidInput(
            f"unknown backend {backend!r}", f"use one of {', '.join(backends.BACKENDS)}"
        )
    if orchestrator and not token:
        raise InvalidInput(
            "--orchestrator-url needs --cluster-token", "pass --cluster-token T as well"
        )
    if not token and not is_loopback(host):
        raise InvalidInput(
            f"--host {host} is reachable from other machines and the worker would have no token",
            "pass --cluster-token T, or listen on 127.0.0.1",
        )
    layout = settings.layout
    report = backends.detect_and_save(layout.backends)
    found = backends.find(report["backends"], backend)
    if found is None or not found["available"]:
        reason = found["reason"] if found else "unknown"
        raise BackendUnavailable(
            f"backend {backend} is not available here: {reason}",
            "run 'llorch-pool backends' to see what this host offers",
        )
    entry = Catalog(layout.catalog).get(model_id)
    if not Path(entry["path"]).is_file():
        raise InvalidInput(
            f"model {model_id!r} file {entry['path']} is missing",
            f"run 'llorch-pool models verify {model_id}' and download it again",
        )
    records = Records(layout)
    layout.locks.mkdir(parents=True, exist_ok=True)
    # Choosing a port and writing the record is one step for concurrent spawns of this home;
    # the listening socket holds the port against everyone else until the worker owns it.
    with (
        _spawn_lock(layout.locks / "spawn.lock"),
        _reserve(host, port, _live_ports(records)) as sock,
    ):
        chosen = int(sock.getsockname()[1])
        wid = check_worker_id(worker_id or f"{os.uname().nodename.split('.')[0]}-{chosen}")
        if records.exists(wid):
            old = records.load(wid)
            if procs.identify(old["pid"], old["start_time"], old["cmdline"]) == "ours":
                raise Conflict(
                    f"worker {wid} is already running (pid {old['pid']})",
                    "stop it first or give another --worker-id",
                )
        if threads is None:
            cores, running = physical_cores(), _running(records)
            threads = thread_share(cores, running)
            threads_rule = f"{cores} physical cores shared by {running + 1} workers"
        else:
            threads_rule = "--threads"
        argv = [
            sys.executable,
            "-m",
            "worker",
            "--model",
            entry["path"],
            "--model-name",
            model_id,
            "--backend",
            backend,
            "--host",
            host,
            "--port",
            str(chosen),
            "--slots",
            str(slots),
            "--worker-id",
            wid,
            "--listen-fd",
            str(sock.fileno()),
        ]
        for flag, value in (("--n-ctx", n_ctx), ("--threads", threads), ("--max-queue", max_queue)):
            if value is not None:
                argv += [flag, str(value)]
        if orchestrator:
            argv += ["--orchestrator-url", orchestrator]
            advertise = advertise_url or _wildcard_advertise(host, chosen)
            if advertise:
                argv += ["--advertise-url", advertise]
        argv += list(extra_args)
        log_path = layout.worker_log(wid)
        # A reused worker id appends to its old log; errors quote only this run's lines.
        log_start = log_path.stat().st_size if log_path.exists() else 0
        layout.home.mkdir(parents=True, exist_ok=True)
        sock.set_inheritable(True)
        pid = _start(argv, log_path, _child_env(token), layout.home)
        sock.set_inheritable(False)
        started = procs.start_time(pid)
        if started is None:
            code = _exit_status(pid)
            raise WorkerFailed(
                f"worker {wid} exited at once (exit code {code}): {log_tail(log_path, log_start)}",
                f"see {log_path}",
            )
        url_host = "127.0.0.1" if host in WILDCARDS else host
        url_host = f"[{url_host}]" if ":" in url_host else url_host
        record = WorkerRecord(
            worker_id=wid,
            pid=pid,
            start_time=started,
            cmdline=argv,
            host=host,
            port=chosen,
            url=f"http://{url_host}:{chosen}",
            model=model_id,
            model_path=entry["path"],
            backend=backend,
            slots=slots,
            log_path=str(log_path),
            orchestrator=orchestrator,
            token=token,
            started_at=time.time(),
            unhealthy_since=None,
            threads=threads,
            threads_rule=threads_rule,
        )
        records.save(record)
    if on_wait is not None:
        on_wait(record)
    _wait_ready(record, records, timeout, log_start)
    return record


def _wait_ready(record: WorkerRecord, records: Records, timeout: float, log_start: int) -> None:
    deadline = time.monotonic() + timeout
    pid, start, argv = record["pid"], record["start_time"], record["cmdline"]
    wid, log_path = record["worker_id"], Path(record["log_path"])
    while True:
        code = _exit_status(pid)
        if code is not None or procs.identify(pid, start, argv) != "ours":
            records.remove(wid)
            raise WorkerFailed(
                f"worker {wid} exited before it was ready (exit code {code}): "
                f"{log_tail(log_path, log_start)}",
                f"see {log_path}",
            )
        health = fetch(record["url"], timeout=2.0)
        # Only our worker's own answer counts: it alone knows the id we gave it.
        ours = health is not None and health.get("worker_id") == wid
        status = health["status"] if health and ours else None
        if status == "ready":
            return
        if status == "failed" or time.monotonic() >= deadline:
            failed = status == "failed"
            last = status or "no answer"
            why = (
                "reported status 'failed'"
                if failed
                else (f"was not ready after {timeout:g}s (last status: {last})")
            )
            procs.terminate(pid, start, argv, STOP_GRACE_S)
            _exit_status(pid)
            records.remove(wid)
            raise WorkerFailed(
                f"worker {wid} {why}; it was stopped: {log_tail(log_path, log_start)}",
                f"see {log_path}" if failed else f"see {log_path}; a slow load needs --timeout",
            )
        time.sleep(0.05)
