"""Who is asking, and what they may see: a task belongs to the tenant of the key that
submitted it (ORCH-150). Pure."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    """The credential behind a request.

    `tenant` is the key's tenant (None for a bare KEY). `admin` (the admin token) sees every
    tenant; `unrestricted` is the fully open daemon (no keys configured, loopback only), where
    anyone sees everything and the body's `tenant` field is taken as given.
    """

    tenant: str | None = None
    admin: bool = False
    unrestricted: bool = False
    key_id: str | None = None  # a stored key's id (ORCH-300); None for flag keys and tokens

    def sees(self, tenant: str | None) -> bool:
        """Whether a task of `tenant` exists for this caller (others get 404, not 403: a
        tenant must not learn which ids another one uses)."""
        return self.admin or self.unrestricted or tenant == self.tenant

    def task_tenant(self, body_tenant: str | None) -> str | None:
        """The tenant a new task belongs to: the key's, whatever the body says; the body's
        only where there are no keys to say it (ORCH-151)."""
        if self.unrestricted or self.admin:
            return body_tenant
        return self.tenant

    @property
    def sees_all(self) -> bool:
        return self.admin or self.unrestricted


OPEN = Caller(unrestricted=True)
ADMIN = Caller(admin=True)
