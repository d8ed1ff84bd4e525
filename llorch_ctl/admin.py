"""`llorch keys create|list|revoke|rotate` and `llorch audit` (CTL-070..073): orchestratord's
`/v2/admin/keys` and `/v2/admin/audit`, with the admin token (`--admin-token`,
`LLORCH_ADMIN_TOKEN`, else the inventory's).

The commands add themselves to `llorch_ctl.app.app` when that module is imported. A new key's
secret goes to stdout alone (so `$(llorch keys create ...)` captures it) and is never written
anywhere else; what happened goes to stderr.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer

from llorch_ctl.app import AdminOpt, JsonOpt, UrlOpt, _orch, app
from llorch_ctl.errors import ApiFailed, ConfigError, HttpUnreachable

if TYPE_CHECKING:
    from llorch_ctl.orch import OrchSettings
# httpx and llorch_ctl.orch (the SDK) are imported where used: `llorch pool ...` loads this
# module too and must not pay for them (CTL-032).

keys_app = typer.Typer(help="API keys in orchestratord (admin token).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}


def parse_duration(flag: str, text: str) -> int:
    """`30d`, `12h`, `15m`, `90s` as seconds; a ConfigError naming `flag` otherwise."""
    m = _DURATION.match(text.strip())
    if m is None or int(m.group(1)) == 0:
        raise ConfigError(f"{flag} {text!r}: give a duration such as 90s, 15m, 12h or 30d")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


class AdminApi:
    """orchestratord's admin endpoints; failures are CtlErrors, one line each."""

    def __init__(self, s: OrchSettings, timeout: float = 30.0) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {s.api_key}"} if s.api_key else {}
        self.url = s.url
        self._http = httpx.Client(base_url=s.url, headers=headers, timeout=timeout)

    def __enter__(self) -> AdminApi:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def call(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        import httpx

        from llorch_sdk.errors import error_from_response

        try:
            r = self._http.request(method, path, json=body, params=params)
        except httpx.HTTPError as e:
            raise HttpUnreachable(f"cannot reach orchestratord at {self.url}: {e}") from None
        if r.status_code >= 400:
            raise ApiFailed(f"orchestratord {self.url}: {error_from_response(r)}")
        return r.json() if r.content else None


def _when(ms: Any, now_ms: int) -> str:
    """A past time as its age (`3m`), a future one as `in 29d`, none as `-`."""
    from llorch_ctl.orch import _age

    if not isinstance(ms, int):
        return "-"
    return _age(ms, now_ms) if ms <= now_ms else "in " + _age(now_ms - (ms - now_ms), now_ms)


KEY_COLUMNS = ("id", "tenant", "label", "created", "expires", "last used", "state")


def render_keys(keys: Sequence[Mapping[str, Any]], now_ms: int | None = None) -> str:
    from llorch_ctl.orch import _table

    if not keys:
        return "no keys\n"
    now = int(time.time() * 1000) if now_ms is None else now_ms
    rows = [tuple(c.upper() for c in KEY_COLUMNS)]
    for k in keys:
        expires = k.get("expires_ms")
        if k.get("revoked"):
            state = "revoked"
        elif isinstance(expires, int) and expires <= now:
            state = "expired"
        else:
            state = "active"
        rows.append(
            (
                str(k.get("id")),
                str(k.get("tenant")),
                str(k.get("label") or "-"),
                _when(k.get("created_ms"), now),
                _when(expires, now),
                _when(k.get("last_used_ms"), now),
                state,
            )
        )
    return _table(rows)


AUDIT_COLUMNS = ("when", "who", "action", "target")


def render_audit(entries: Sequence[Mapping[str, Any]], now_ms: int | None = None) -> str:
    from llorch_ctl.orch import _table

    if not entries:
        return "no audit entries\n"
    now = int(time.time() * 1000) if now_ms is None else now_ms
    rows = [tuple(c.upper() for c in AUDIT_COLUMNS)]
    rows += [
        (
            _when(e.get("at_ms"), now),
            str(e.get("who")),
            str(e.get("action")),
            str(e.get("target") or "-"),
        )
        for e in entries
    ]
    return _table(rows)


def _admin(ctx: typer.Context, url: str | None, token: str | None) -> AdminApi:
    return AdminApi(_orch(ctx, url, token, credential="admin_token"))


def _create(api: AdminApi, tenant: str, label: str | None, ttl_s: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"tenant": tenant}
    if label is not None:
        body["label"] = label
    if ttl_s is not None:
        body["ttl_s"] = ttl_s
    created = api.call("POST", "/v2/admin/keys", body)
    if not isinstance(created, dict) or not isinstance(created.get("secret"), str):
        raise ApiFailed("orchestratord answered the new key without its secret")
    return created


def _show_created(created: Mapping[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(created, indent=2) + "\n")
    else:
        sys.stdout.write(str(created["secret"]) + "\n")
    expires = created.get("expires_ms")
    until = f", expires {_when(expires, int(time.time() * 1000))}" if expires else ""
    sys.stderr.write(
        f"created key {created.get('id')} for tenant {created.get('tenant')}{until}; "
        "its secret is shown this once\n"
    )


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="The tenant the key's tasks belong to.")],
    label: Annotated[
        str | None, typer.Option(help="A name for the key (who holds it).", show_default=False)
    ] = None,
    expires_in: Annotated[
        str | None,
        typer.Option(
            "--expires-in",
            help="Lifetime: 90s, 15m, 12h or 30d [default: none]",
            show_default=False,
        ),
    ] = None,
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the key as JSON (its secret included).")
    ] = False,
) -> int:
    """Make an API key and print its secret.

    The secret is shown this once: orchestratord keeps only its hash."""
    ttl_s = parse_duration("--expires-in", expires_in) if expires_in is not None else None
    with _admin(ctx, orchestrator_url, admin_token) as api:
        _show_created(_create(api, tenant, label, ttl_s), as_json)
    return 0


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's.")] = None,
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """List the stored keys, newest first.

    Never their secrets; keys given as orchestratord flags are not listed."""
    with _admin(ctx, orchestrator_url, admin_token) as api:
        keys = api.call("GET", "/v2/admin/keys", params={"tenant": tenant} if tenant else None)
    listed = keys.get("keys", []) if isinstance(keys, dict) else []
    sys.stdout.write(json.dumps(listed, indent=2) + "\n" if as_json else render_keys(listed))
    return 0


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key's id (key_...).")],
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
) -> int:
    """Revoke a key at once.

    Its next request is refused, and the streams open with it end with an error."""
    with _admin(ctx, orchestrator_url, admin_token) as api:
        api.call("DELETE", f"/v2/admin/keys/{quote(key_id, safe='')}")
    sys.stderr.write(f"revoked key {key_id}\n")
    return 0


@keys_app.command("rotate")
def keys_rotate(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key to replace.")],
    expires_in: Annotated[
        str | None,
        typer.Option(
            "--expires-in",
            help="The new key's lifetime [default: the old key's lifetime, if it had one]",
            show_default=False,
        ),
    ] = None,
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the new key as JSON (its secret included).")
    ] = False,
) -> int:
    """Replace a key: a new one, then the old one revoked.

    The new key has the old one's tenant and label; its secret is printed, then the old key is
    revoked at once. There is no overlap: for one, `keys create`, move the clients, then
    `keys revoke`."""
    ttl_s = parse_duration("--expires-in", expires_in) if expires_in is not None else None
    with _admin(ctx, orchestrator_url, admin_token) as api:
        listed = api.call("GET", "/v2/admin/keys").get("keys", [])
        old = next((k for k in listed if k.get("id") == key_id), None)
        if old is None:
            raise ApiFailed(f"orchestratord {api.url}: no API key {key_id}")
        if old.get("revoked"):
            raise ApiFailed(f"key {key_id} is revoked already; use `llorch keys create`")
        if ttl_s is None and isinstance(old.get("expires_ms"), int):
            ttl_s = max(1, (old["expires_ms"] - old["created_ms"]) // 1000)
        created = _create(api, str(old["tenant"]), old.get("label"), ttl_s)
        api.call("DELETE", f"/v2/admin/keys/{quote(key_id, safe='')}")
    _show_created(created, as_json)
    sys.stderr.write(f"revoked key {key_id}\n")
    return 0


@app.command("audit")
def audit(
    ctx: typer.Context,
    since: Annotated[
        str | None,
        typer.Option(
            help="Only entries after this: 30s, 15m, 2h, 1d ago, or unix milliseconds.",
            show_default=False,
        ),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option(
            help="Only this action (keys.create), or a prefix ending in '.' (keys.).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Entries at most.")] = 100,
    orchestrator_url: UrlOpt = None,
    admin_token: AdminOpt = None,
    as_json: JsonOpt = False,
) -> int:
    """Show the audit trail of admin actions, newest first.

    Each entry: when, who (which credential), what, on what; --json adds before and after."""
    from llorch_ctl.orch import parse_since

    params: dict[str, Any] = {"limit": limit}
    if since is not None:
        params["since"] = parse_since(since, now_ms=int(time.time() * 1000))
    if action is not None:
        params["action"] = action
    with _admin(ctx, orchestrator_url, admin_token) as api:
        body = api.call("GET", "/v2/admin/audit", params=params)
    entries = body.get("entries", []) if isinstance(body, dict) else []
    sys.stdout.write(json.dumps(entries, indent=2) + "\n" if as_json else render_audit(entries))
    return 0
