"""`/v2/admin/keys`: API keys made, listed and revoked while orchestratord runs (ORCH-300..305).

The secret is in the reply to `POST` only; the database and the key table keep its SHA-256
(orchestratord.runtime.keys says why a fast hash). The database is written first, then the
in-memory table the auth middleware reads, so what a reply says is what survives a restart.
"""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from orchestratord.http.audit import audit
from orchestratord.runtime.audit import AuditLog
from orchestratord.runtime.keys import (
    MAX_LABEL_CHARS,
    MAX_TTL_S,
    TENANT,
    TENANT_RULE,
    KeyRing,
    StoredKey,
    hash_secret,
    new_key_id,
    new_secret,
)
from orchestratord.store import admin as admin_store
from shared.params import FieldReader, read_json
from shared.problem import NotFound

NO_STORE = {"Cache-Control": "no-store"}


def _parts(request: Request) -> tuple[KeyRing, AuditLog]:
    return request.state.keys, request.state.audit


async def create_key(request: Request) -> Response:
    """{tenant, label?, ttl_s? | expires_ms?} -> the key with its `secret`, shown this once."""
    ring, log = _parts(request)
    r = FieldReader(await read_json(request), {"tenant", "label", "ttl_s", "expires_ms"})
    tenant = r.string("tenant", max_len=128, required=True)
    if tenant is not None and not TENANT.fullmatch(tenant):
        r.fail("tenant", f"must be {TENANT_RULE}")
    label = r.string("label", max_len=MAX_LABEL_CHARS)
    ttl_s = r.integer("ttl_s", None, 1, MAX_TTL_S)
    now = log.clock()
    expires_ms = r.integer("expires_ms", None, now + 1, now + MAX_TTL_S * 1000)
    if "ttl_s" in r.body and "expires_ms" in r.body:
        r.fail("expires_ms", "give ttl_s or expires_ms, not both")
    r.raise_if_failed()
    assert tenant is not None
    if ttl_s is not None:
        expires_ms = now + ttl_s * 1000
    secret = new_secret()
    key = StoredKey(
        id=new_key_id(),
        tenant=tenant,
        key_hash=hash_secret(secret.encode()),
        created_ms=now,
        label=label,
        expires_ms=expires_ms,
    )
    await asyncio.to_thread(admin_store.insert_key, log.store, key.row())
    ring.add(key)
    audit(request, "keys.create", key.id, after=key.listing())
    return JSONResponse({**key.listing(), "secret": secret}, status_code=201, headers=NO_STORE)


async def list_keys(request: Request) -> Response:
    ring, _ = _parts(request)
    r = FieldReader(dict(request.query_params), known={"tenant"})
    tenant = r.string("tenant", max_len=128)
    r.raise_if_failed()
    keys = [k.listing() for k in ring.all() if tenant is None or k.tenant == tenant]
    return JSONResponse({"keys": keys})


async def revoke_key(request: Request) -> Response:
    """Revoke at once: the next request with it is 401 and its open streams end (ORCH-302).
    Revoking a revoked key changes nothing and says so with the same reply."""
    ring, log = _parts(request)
    key_id = request.path_params["key_id"]
    key = ring.get(key_id)
    if key is None:
        raise NotFound(f"no API key {key_id}")
    before = key.listing()
    now = log.clock()
    await asyncio.to_thread(admin_store.revoke_key, log.store, key_id, now)
    ring.revoke(key_id, now)
    audit(request, "keys.revoke", key_id, before=before, after=key.listing())
    return JSONResponse(key.listing())


routes = [
    Route("/v2/admin/keys", create_key, methods=["POST"]),
    Route("/v2/admin/keys", list_keys, methods=["GET"]),
    Route("/v2/admin/keys/{key_id}", revoke_key, methods=["DELETE"]),
]
