"""API keys made at run time (ORCH-300..305): the in-memory key table the auth middleware reads.

A key's secret is `llk_` and 43 url-safe characters (256 random bits); it is shown once, when
it is made, and only its SHA-256 is kept. A fast hash is the right one here: a slow one
(bcrypt, argon2) protects low-entropy passwords against guessing, and nobody guesses 256
random bits, so it would only make every request slower (GitHub's and Stripe's tokens are
kept the same way). A lookup hashes what the client presents and finds it by that digest; the
dict lookup leaks nothing usable (the attacker cannot choose the digest), and the found entry's
digest is compared with `hmac.compare_digest` all the same.

The database is the truth across restarts; this table is loaded once at start-up and changed
with each create and revoke, so authenticating a request does no database work. Each key holds
the `StreamStop` of the streams opened with it: revoking it ends them at once (ORCH-302).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from shared.problem import Unauthorized
from shared.sse import StreamStop

SECRET_PREFIX = "llk_"
ID_PREFIX = "key_"
MAX_LABEL_CHARS = 128
MAX_TTL_S = 10 * 366 * 86_400
TENANT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
TENANT_RULE = "1-128 characters: letters, digits and '.', '_', '-', starting with a letter or digit"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return ID_PREFIX + secrets.token_hex(8)


def hash_secret(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


@dataclass
class StoredKey:
    id: str
    tenant: str
    key_hash: str
    created_ms: int
    label: str | None = None
    expires_ms: int | None = None
    revoked_ms: int | None = None
    last_used_ms: int | None = None
    stop: StreamStop = field(default_factory=StreamStop, repr=False, compare=False)

    def listing(self) -> dict[str, Any]:
        """What `GET /v2/admin/keys` shows: never the secret nor its hash."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "label": self.label,
            "created_ms": self.created_ms,
            "expires_ms": self.expires_ms,
            "revoked_ms": self.revoked_ms,
            "last_used_ms": self.last_used_ms,
            "revoked": self.revoked_ms is not None,
        }

    def row(self) -> dict[str, Any]:
        """Its database row (the store's api_keys table)."""
        return {
            "id": self.id,
            "tenant": self.tenant,
            "label": self.label,
            "key_hash": self.key_hash,
            "created_ms": self.created_ms,
            "expires_ms": self.expires_ms,
            "revoked_ms": self.revoked_ms,
            "last_used_ms": self.last_used_ms,
        }


USED_STAMP_MS = 60_000  # last-used moves in steps of a minute: it says "recently", not when


class KeyRing:
    """The stored keys by digest and by id. Used on the event loop only."""

    def __init__(self) -> None:
        self._by_hash: dict[str, StoredKey] = {}
        self._by_id: dict[str, StoredKey] = {}
        self.used: set[str] = set()  # ids whose last_used_ms moved since it was last saved

    def load(self, keys: Iterable[StoredKey]) -> None:
        for k in keys:
            self.add(k)

    def add(self, key: StoredKey) -> None:
        self._by_hash[key.key_hash] = key
        self._by_id[key.id] = key

    @property
    def required(self) -> bool:
        """Client routes need a key once any key was ever made, revoked ones included: revoking
        the last key must not open the daemon (ORCH-301)."""
        return bool(self._by_id)

    def get(self, key_id: str) -> StoredKey | None:
        return self._by_id.get(key_id)

    def all(self) -> list[StoredKey]:
        return sorted(self._by_id.values(), key=lambda k: (-k.created_ms, k.id))

    def get_by_secret(self, presented: bytes) -> StoredKey | None:
        """The stored key `presented` is, live or not."""
        return self._by_hash.get(hash_secret(presented))

    def authenticate(self, presented: bytes, now_ms: int) -> StoredKey | None:
        """The live key `presented` is; None when it is no stored key; Unauthorized for one
        that was revoked or has expired."""
        digest = hash_secret(presented)
        key = self._by_hash.get(digest)
        if key is None or not hmac.compare_digest(key.key_hash, digest):
            return None
        if key.revoked_ms is not None:
            raise Unauthorized(f"the API key {key.id} was revoked")
        if key.expires_ms is not None and now_ms >= key.expires_ms:
            raise Unauthorized(f"the API key {key.id} has expired")
        if key.last_used_ms is None or now_ms - key.last_used_ms >= USED_STAMP_MS:
            key.last_used_ms = now_ms
            self.used.add(key.id)
        return key

    def revoke(self, key_id: str, now_ms: int) -> StoredKey | None:
        """Mark it revoked and end the streams opened with it; None for an unknown id."""
        key = self._by_id.get(key_id)
        if key is None:
            return None
        if key.revoked_ms is None:
            key.revoked_ms = now_ms
        key.stop.stop(Unauthorized(f"the API key {key.id} was revoked"))
        return key

    def take_used(self) -> list[tuple[str, int]]:
        """(id, last_used_ms) of the keys used since the last call, for the store."""
        out = [(i, self._by_id[i].last_used_ms or 0) for i in self.used if i in self._by_id]
        self.used = set()
        return out
