"""Routes for workers: register, heartbeat, deregister, list (the cluster token guards them,
orchestratord.http.auth)."""

from __future__ import annotations

from typing import TypeGuard, cast
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestratord.domain.registry import REPORTED_STATES, Worker
from orchestratord.http.audit import audit
from orchestratord.runtime.service import TaskService
from shared.names import MODEL_NAME, POOL_NAME, WORKER_ID
from shared.params import FieldReader, read_json
from shared.problem import InvalidParams, NotFound
from shared.wire import (
    EmbeddingsStatus,
    HeartbeatBody,
    HeartbeatReply,
    KvBlockReport,
    RegisterBody,
    WorkerStatus,
)


def _url_problem(url: str) -> str | None:
    """Why orchestratord could not open a connection to `url`, or None."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port out of range or not a number
        host = parts.hostname
        if parts.scheme not in ("http", "https") or not host:
            return "must be an http:// or https:// URL with a host"
        if any(ch.isspace() or not ch.isprintable() for ch in host):
            return "has a control or space character in its host"
        host.encode("idna")
    except ValueError as e:  # UnicodeError included: a host that IDNA cannot encode
        return f"is not a usable URL: {e}"
    return None


# Bounds keep a registration within what a worker can report (`--slots` <= 256) and what
# the registry's integer columns hold.
MAX_SLOTS = 256
MAX_N_CTX = 10_000_000


async def register(request: Request) -> Response:
    f = FieldReader(await read_json(request))
    url = f.string("url", max_len=512, required=True) or ""
    problem = _url_problem(url) if url else None
    if problem:
        f.fail("url", problem)
    body: RegisterBody = {  # the wire's names: mypy checks them against shared/wire.py
        "worker_id": f.name("worker_id", WORKER_ID, required=True) or "",
        "url": url.rstrip("/"),
        "model": f.name("model", MODEL_NAME, required=True) or "",
        "backend": f.string("backend", "cpu", max_len=32) or "cpu",
        "pool": f.name("pool", POOL_NAME, "default") or "default",
        "slots_total": f.integer("slots_total", None, 1, MAX_SLOTS) or 1,
        "n_ctx": f.integer("n_ctx", 0, 0, MAX_N_CTX) or 0,
    }
    if "slots_total" not in f.body:
        f.fail("slots_total", "is required")
    f.raise_if_failed()
    worker = Worker(
        id=body["worker_id"],
        url=body["url"],
        model=body["model"],
        backend=body.get("backend", "cpu"),
        pool=body.get("pool", "default"),
        slots_total=body["slots_total"],
        n_ctx=body.get("n_ctx", 0),
    )
    service: TaskService = request.state.service
    w = service.register_worker(worker)
    return JSONResponse(w.listing(service.clock(), service.registry.stale_ms), status_code=201)


async def heartbeat(request: Request) -> Response:
    worker_id = request.path_params["worker_id"]
    problem = WORKER_ID.problem(worker_id)
    if problem:  # no such worker can have registered (ORCH-045); say why rather than 404
        raise InvalidParams(
            f"worker_id: {problem}", errors=[{"field": "worker_id", "message": problem}]
        )
    f = FieldReader(await read_json(request))
    state = f.string("state", "ready", max_len=32) or "ready"
    if state not in REPORTED_STATES:
        f.fail("state", f"must be one of {sorted(REPORTED_STATES)}")
    beat: HeartbeatBody = {  # the wire's names: mypy checks them against shared/wire.py
        "state": cast(WorkerStatus, state),
        "slots_total": f.integer("slots_total", None, 1, MAX_SLOTS) or 1,
        "slots_busy": f.integer("slots_busy", 0, 0, MAX_SLOTS) or 0,
    }
    if "slots_total" not in f.body:
        f.fail("slots_total", "is required")
    embeddings = _embeddings_available(f)
    kv = _kv_blocks(f)
    f.raise_if_failed()
    service: TaskService = request.state.service
    if not service.heartbeat(
        worker_id,
        beat.get("state", "ready"),
        beat["slots_total"],
        beat.get("slots_busy", 0),
        embeddings,
    ):
        raise NotFound(f"worker {worker_id} is not registered; register again")
    reply: HeartbeatReply = {"ok": True}
    if kv is not None and service.kv_report(worker_id, kv):
        reply["kv_resync"] = True  # ORCH-401
    return JSONResponse(reply)


# A full report holds what one worker caches: slots x context / block size, plus its host-RAM
# entries; far below this for any real worker.
MAX_KV_HASHES = 1_000_000
_MAX_HASH = (1 << 63) - 1


def _kv_blocks(f: FieldReader) -> KvBlockReport | None:
    """A heartbeat's `kv_blocks` (WRK-171), checked; None when absent or bad (then failed)."""
    section = f.body.get("kv_blocks")
    if section is None:
        return None
    problem = "must be {block_size, epoch, seq, full, stored, evicted}"
    if not isinstance(section, dict):
        f.fail("kv_blocks", problem)
        return None
    size, epoch, seq, full = (section.get(k) for k in ("block_size", "epoch", "seq", "full"))
    lists = [section.get("stored"), section.get("evicted")]
    if (
        not _int_in(size, 1, 1 << 20)
        or not isinstance(epoch, str)
        or not 0 < len(epoch) <= 64
        or not _int_in(seq, 1, _MAX_HASH)
        or not isinstance(full, bool)
        or not all(isinstance(x, list) for x in lists)
    ):
        f.fail("kv_blocks", problem)
        return None
    stored, evicted = lists
    assert isinstance(stored, list) and isinstance(evicted, list)
    if len(stored) + len(evicted) > MAX_KV_HASHES or not all(
        _int_in(h, 0, _MAX_HASH) for h in (*stored, *evicted)
    ):
        f.fail("kv_blocks", f"stored/evicted: at most {MAX_KV_HASHES} integers 0..2^63-1")
        return None
    report: KvBlockReport = {
        "block_size": size,
        "epoch": epoch,
        "seq": seq,
        "full": full,
        "stored": stored,
        "evicted": evicted,
    }
    return report


def _int_in(value: object, lo: int, hi: int) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi


def _embeddings_available(f: FieldReader) -> bool | None:
    """`embeddings.available` of a heartbeat (WRK-111), None when it does not say."""
    section: EmbeddingsStatus | None = f.body.get("embeddings")
    if section is None:
        return None
    available = section.get("available") if isinstance(section, dict) else None
    if not isinstance(available, bool):
        f.fail("embeddings", "must be an object with a boolean `available`")
        return None
    return available


async def deregister(request: Request) -> Response:
    service: TaskService = request.state.service
    worker_id = request.path_params["worker_id"]
    known = service.registry.workers.get(worker_id)
    before = known.listing(service.clock(), service.registry.stale_ms) if known else None
    if not service.deregister_worker(worker_id):
        raise NotFound(f"worker {worker_id} is not registered")
    audit(request, "workers.remove", worker_id, before=before)
    return Response(status_code=204)


async def list_workers(request: Request) -> Response:
    service: TaskService = request.state.service
    return JSONResponse({"workers": service.worker_listings()})


routes = [
    Route("/v2/workers/register", register, methods=["POST"]),
    Route("/v2/workers/{worker_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/v2/workers/{worker_id}", deregister, methods=["DELETE"]),
    Route("/v2/workers", list_workers, methods=["GET"]),
]
