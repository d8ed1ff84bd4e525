"""The audit trail's writer (ORCH-306, ORCH-307): admin actions recorded off the event loop.

`AuditLog.record` only appends to a list; a background task writes what gathered in one
transaction per interval, in a thread. It also saves the keys' last-used stamps (ORCH-303),
which move on the request path and so must not be written there either.

Handlers call `orchestratord.http.audit.audit(request, action, target, before=, after=)`, which
names the credential; anything else with an `AuditLog` calls `record` with its own `who`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable
from typing import Any

from orchestratord.runtime.keys import SECRET_PREFIX, KeyRing
from orchestratord.store import admin as admin_store
from orchestratord.store.db import Store

log = logging.getLogger("llorch.orchestratord.audit")
# Fields whose values never reach the trail, at any depth of before/after: named as a secret
# (`secret`, `client_secret`, `password`, `api_key`, ...) or as a credential token (`token`,
# `hf_token`, `access_token`, ...). Not every name with "token" in it: `daily_tokens` and
# `kv_bytes_per_token` are what an operator reads the trail for.
SECRET_FIELD = re.compile(
    r"(^|_)(secret|password|passphrase|key_hash|api_key|authorization)(_|$)"
    r"|^((access|auth|bearer|hf|refresh|api|id|session)_)?token$",
    re.I,
)
REDACTED = "[redacted]"


def redact(value: Any) -> Any:
    """`value` with every secret-named field's value, and every string that is a key's secret,
    replaced by REDACTED."""
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_FIELD.search(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str) and value.startswith(SECRET_PREFIX):
        return REDACTED
    return value


class AuditLog:
    def __init__(
        self,
        store: Store,
        clock: Callable[[], int],
        keys: KeyRing | None = None,
        interval_s: float = 0.2,
    ) -> None:
        self.store = store
        self.clock = clock
        self.keys = keys
        self.interval_s = interval_s
        self._pending: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one write at a time, in order

    def record(
        self,
        who: str,
        action: str,
        target: str | None = None,
        *,
        before: Any = None,
        after: Any = None,
    ) -> None:
        """Note one admin action (on the event loop; it returns at once)."""
        entry = {
            "at_ms": self.clock(),
            "who": who,
            "action": action,
            "target": target,
            "before": redact(before),
            "after": redact(after),
        }
        self._pending.append(entry)
        log.info("audit: %s %s %s", who, action, target or "-")
        self._wake.set()

    def start(self) -> None:
        self._runner = asyncio.create_task(self._run(), name="audit-writer")

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(60.0):  # last-used stamps, when nothing else wakes
                    await self._wake.wait()
            await asyncio.sleep(self.interval_s)
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                log.exception("audit write failed; will retry")
                await asyncio.sleep(1.0)
                self._wake.set()

    async def flush(self) -> None:
        """Write what was recorded (and the keys' last-used stamps) now."""
        async with self._lock:
            rows, self._pending = self._pending, []
            used = self.keys.take_used() if self.keys is not None else []
            if not rows and not used:
                return
            try:
                await asyncio.to_thread(self._write, rows, used)
            except Exception:
                self._pending = rows + self._pending
                if self.keys is not None:
                    self.keys.used.update(key_id for key_id, _ in used)
                raise

    def _write(self, rows: list[dict[str, Any]], used: list[tuple[str, int]]) -> None:
        admin_store.append_audit(self.store, rows)
        admin_store.save_last_used(self.store, used)

    async def close(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
        await self.flush()
