"""`llorch pool ...`: run llorch-pool on pool hosts and report what came back.

Pure helpers (argument checks, the status table) plus two drivers that take a transport
factory, so tests can hand in a real `ParamikoTransport` aimed at a loopback sshd.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from llorch_ctl.errors import CtlError, Interrupted, RemoteCommandMissing
from llorch_ctl.inventory import Inventory, SshTarget, resolve_target
from llorch_ctl.transport import ParamikoTransport, Sink, Transport

TransportFactory = Callable[[SshTarget], Transport]


def paramiko_factory(accept_new_host_key: bool) -> TransportFactory:
    def make(target: SshTarget) -> Transport:
        return ParamikoTransport(target, accept_new_host_key=accept_new_host_key)

    return make


def live_sink(stream: BinaryIO) -> Sink:
    """Write each chunk through at once, so remote progress bars move as they do there."""

    def write(data: bytes) -> None:
        stream.write(data)
        stream.flush()

    return write


def run_pool_command(
    target: SshTarget, argv: Sequence[str], transport: Transport, stdout: Sink, stderr: Sink
) -> int:
    """Run `pool_cmd ARGV...` on the pool and return its exit status (127 becomes an error)."""
    status = transport.run(argv, stdout, stderr)
    if status == 127:
        raise RemoteCommandMissing(
            f"pool {target.pool!r}: the remote shell cannot run {target.pool_cmd!r} (exit 127):"
            f" install llorch-pool on {target.hostname} or set pool_cmd in the inventory"
        )
    return status


def run_remote(
    inv: Inventory,
    pool: str,
    argv: Sequence[str],
    *,
    accept_new_host_key: bool = False,
    connect_timeout: float | None = None,
) -> int:
    """`llorch pool ... --host POOL`: llorch-pool ARGV there, its output live on ours."""

    target = resolve_target(inv, pool, connect_timeout=connect_timeout)
    transport = paramiko_factory(accept_new_host_key)(target)
    try:
        return run_pool_command(
            target, argv, transport, live_sink(sys.stdout.buffer), live_sink(sys.stderr.buffer)
        )
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; closed the SSH session to pool {pool!r}") from None


@dataclass(frozen=True)
class PoolStatus:
    pool: str
    address: str
    workers: list[dict[str, Any]] | None = None
    error: str | None = None
    exit_code: int = 0


def _workers_from_json(text: str) -> list[dict[str, Any]]:
    data = json.loads(text)
    if isinstance(data, dict):
        data = data.get("workers", [])
    if not isinstance(data, list):
        raise ValueError("expected a JSON list of workers")
    return [w for w in data if isinstance(w, dict)]


def probe_pool(
    name: str, inv: Inventory, factory: TransportFactory, timeout: float | None
) -> PoolStatus:
    """One pool's answer to `llorch-pool worker list --json`, or the reason there is none."""
    address = "?"
    try:
        target = resolve_target(inv, name, connect_timeout=timeout)
        address = f"{target.user}@{target.hostname}:{target.port}"
        out: list[bytes] = []
        err: list[bytes] = []
        status = run_pool_command(
            target, ["worker", "list", "--json"], factory(target), out.append, err.append
        )
    except CtlError as e:
        return PoolStatus(name, address, error=e.message, exit_code=e.exit_code)
    if status != 0:
        last = b"".join(err).decode(errors="replace").strip().splitlines()
        why = last[-1] if last else "no message"
        return PoolStatus(name, address, error=f"llorch-pool exited {status}: {why}", exit_code=1)
    try:
        workers = _workers_from_json(b"".join(out).decode(errors="replace"))
    except ValueError as e:
        return PoolStatus(name, address, error=f"unreadable worker list: {e}", exit_code=1)
    return PoolStatus(name, address, workers=workers)


def gather_status(
    inv: Inventory, names: Sequence[str], factory: TransportFactory, timeout: float | None
) -> list[PoolStatus]:
    """Ask every pool at once; the slowest pool, not the sum, bounds the wait."""
    if not names:
        return []
    with ThreadPoolExecutor(max_workers=min(16, len(names))) as ex:
        return list(ex.map(lambda n: probe_pool(n, inv, factory, timeout), names))


def _worker_summary(w: dict[str, Any]) -> str:
    wid = str(w.get("id") or w.get("worker_id") or "?")
    model = str(w.get("model") or w.get("model_id") or "?")
    state = str(w.get("status") or w.get("state") or ("alive" if w.get("alive") else "?"))
    port = w.get("port")
    return f"{wid}:{model}@{port}({state})" if port else f"{wid}:{model}({state})"


def render_status(rows: Sequence[PoolStatus]) -> str:
    """One table, one line per pool, in the order the pools were asked."""
    table = [("POOL", "ADDRESS", "STATE", "WORKERS", "DETAIL")]
    for r in rows:
        if r.error is not None:
            table.append((r.pool, r.address, "error", "-", r.error))
        else:
            ws = r.workers or []
            table.append(
                (r.pool, r.address, "ok", str(len(ws)), " ".join(map(_worker_summary, ws)))
            )
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:4])) + "  " + row[4]
        for row in table
    ]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def status_json(rows: Sequence[PoolStatus]) -> str:
    return json.dumps(
        [
            {
                "pool": r.pool,
                "address": r.address,
                "ok": r.error is None,
                "error": r.error,
                "workers": r.workers,
            }
            for r in rows
        ],
        indent=2,
    )
