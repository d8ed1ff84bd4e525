"""The operator's inventory: which pools exist and how to reach them over SSH.

The file is TOML (`~/.config/llorch/config.toml`, or `--config` / `LLORCH_CONFIG`):

    known_hosts = "~/.ssh/known_hosts"      # optional; also ~/.ssh/config UserKnownHostsFile
    ssh_config = "~/.ssh/config"            # optional
    connect_timeout = 10.0                  # seconds, optional

    [orchestrator]                          # optional; flags and LLORCH_* variables win
    url = "http://orch.lan:8080"
    api_key = "..."                         # client key: infer --model, tasks
    cluster_token = "..."                   # the workers' token: `llorch workers`, infer --worker
    admin_token = "..."                     # `workers rm`, `tasks list --tenant`, `fleet apply`

    [pools.gpu-box-1]
    host = "gpu-box-1.lan"                  # default: the pool name, looked up in ~/.ssh/config
    user = "llorch"                         # default: ~/.ssh/config User, then the local user
    port = 22                               # default: ~/.ssh/config Port, then 22
    identity_file = "~/.ssh/id_ed25519"     # default: ~/.ssh/config IdentityFile, agent
    pool_cmd = "llorch-pool"                # remote shell text, inserted verbatim
    env = { LLORCH_HOME = "/srv/llorch" }   # set for the remote command (via `env`)

Loading is pure parsing and validation; nothing here connects anywhere.
"""

from __future__ import annotations

import getpass
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llorch_ctl.errors import ConfigError, UnknownPool
from llorch_ctl.passthrough import MIN_CONNECT_TIMEOUT

DEFAULT_CONFIG = Path("~/.config/llorch/config.toml")
DEFAULT_KNOWN_HOSTS = Path("~/.ssh/known_hosts")
DEFAULT_SSH_CONFIG = Path("~/.ssh/config")
DEFAULT_POOL_CMD = "llorch-pool"
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_KEEPALIVE_S = 15.0  # SSH keepalive while a command runs (CTL-014)


@dataclass(frozen=True)
class PoolEntry:
    """One `[pools.NAME]` table as written; unset fields are None."""

    name: str
    host: str | None = None
    user: str | None = None
    port: int | None = None
    identity_file: Path | None = None
    pool_cmd: str = DEFAULT_POOL_CMD
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Inventory:
    path: Path | None
    pools: Mapping[str, PoolEntry]
    known_hosts: Path | None = None
    ssh_config: Path | None = None
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    orch_url: str | None = None
    api_key: str | None = None
    cluster_token: str | None = None
    admin_token: str | None = None

    def pool(self, name: str) -> PoolEntry:
        try:
            return self.pools[name]
        except KeyError:
            known = ", ".join(sorted(self.pools)) or "none"
            where = self.path or DEFAULT_CONFIG
            raise UnknownPool(
                f"unknown pool {name!r}: add [pools.{name}] to {where} (known pools: {known})"
            ) from None


@dataclass(frozen=True)
class SshTarget:
    """Everything needed to open one SSH session, after ~/.ssh/config is applied."""

    pool: str
    hostname: str
    port: int
    user: str
    identity_files: tuple[Path, ...]
    known_hosts: Path
    connect_timeout: float
    pool_cmd: str
    env: Mapping[str, str]
    proxy_command: str | None = None
    keepalive_s: float = DEFAULT_KEEPALIVE_S  # 0: none

    @property
    def host_key_name(self) -> str:
        """The name known_hosts files this host under (OpenSSH's `[host]:port` for non-22)."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def _expand(value: str) -> Path:
    return Path(os.path.expandvars(value)).expanduser()


def _check_keys(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")


def _opt_str(table: Mapping[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} must be a non-empty string")
    return value


def _parse_pool(name: str, table: Any, where: str) -> PoolEntry:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [pools.{name}] must be a table")
    w = f"{where} [pools.{name}]"
    _check_keys(table, {"host", "user", "port", "identity_file", "pool_cmd", "env"}, w)
    port = table.get("port")
    if port is not None and (
        not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536
    ):
        raise ConfigError(f"{w}: port must be an integer 1-65535")
    env = table.get("env", {})
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and k.isidentifier() and isinstance(v, str) for k, v in env.items()
    ):
        raise ConfigError(f'{w}: env must be a table of NAME = "value" strings')
    identity = _opt_str(table, "identity_file", w)
    return PoolEntry(
        name=name,
        host=_opt_str(table, "host", w),
        user=_opt_str(table, "user", w),
        port=port,
        identity_file=_expand(identity) if identity else None,
        pool_cmd=_opt_str(table, "pool_cmd", w) or DEFAULT_POOL_CMD,
        env=dict(env),
    )


def parse_inventory(data: Mapping[str, Any], path: Path | None = None) -> Inventory:
    """Validate a parsed TOML document; raises ConfigError naming the bad key."""
    where = str(path) if path else "inventory"
    _check_keys(
        data, {"known_hosts", "ssh_config", "connect_timeout", "orchestrator", "pools"}, where
    )
    pools_table = data.get("pools", {})
    if not isinstance(pools_table, dict):
        raise ConfigError(f"{where}: [pools] must be a table of pool tables")
    pools = {name: _parse_pool(name, t, where) for name, t in pools_table.items()}
    timeout = data.get("connect_timeout", DEFAULT_CONNECT_TIMEOUT)
    if (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or not timeout >= MIN_CONNECT_TIMEOUT
    ):
        raise ConfigError(
            f"{where}: connect_timeout must be a number of seconds, at least {MIN_CONNECT_TIMEOUT}"
        )
    orch = data.get("orchestrator", {})
    if not isinstance(orch, dict):
        raise ConfigError(f"{where}: [orchestrator] must be a table")
    _check_keys(orch, {"url", "api_key", "cluster_token", "admin_token"}, f"{where} [orchestrator]")
    kh = _opt_str(data, "known_hosts", where)
    sc = _opt_str(data, "ssh_config", where)
    return Inventory(
        path=path,
        pools=pools,
        known_hosts=_expand(kh) if kh else None,
        ssh_config=_expand(sc) if sc else None,
        connect_timeout=float(timeout),
        orch_url=_opt_str(orch, "url", f"{where} [orchestrator]"),
        api_key=_opt_str(orch, "api_key", f"{where} [orchestrator]"),
        cluster_token=_opt_str(orch, "cluster_token", f"{where} [orchestrator]"),
        admin_token=_opt_str(orch, "admin_token", f"{where} [orchestrator]"),
    )


def load_inventory(path: Path | None) -> Inventory:
    """Read the inventory; an explicitly named file must exist, the default one may not."""
    explicit = path is not None
    p = (path or DEFAULT_CONFIG).expanduser()
    if not p.exists():
        if explicit:
            raise ConfigError(
                f"inventory {p} does not exist: create it, or name another with --config"
            )
        return Inventory(path=None, pools={})
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read inventory {p}: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"inventory {p} is not valid TOML: {e}") from e
    return parse_inventory(data, p)


def _ssh_config_for(path: Path, alias: str) -> Mapping[str, Any]:
    import paramiko  # only here: `llorch infer` and friends never pay for it

    try:
        return paramiko.SSHConfig.from_path(str(path)).lookup(alias)
    except OSError as e:
        raise ConfigError(f"cannot read ssh config {path}: {e}") from e
    except ImportError as e:
        # `Match exec` needs `invoke`, which the CLI leaves out to start faster.
        raise ConfigError(f"ssh config {path}: `Match exec` is not supported by llorch") from e
    except Exception as e:  # paramiko raises ConfigParseError and plain exceptions
        raise ConfigError(f"ssh config {path} is invalid: {e}") from e


def resolve_target(inv: Inventory, name: str, *, connect_timeout: float | None = None) -> SshTarget:
    """Apply ~/.ssh/config under the inventory's explicit values, as OpenSSH does for flags.

    Honoured: HostName, Port, User, IdentityFile, UserKnownHostsFile, ConnectTimeout,
    ServerAliveInterval and ProxyCommand. ProxyJump is refused with a hint rather than silently
    bypassed.
    """
    entry = inv.pool(name)
    alias = entry.host or entry.name
    ssh_cfg_path = (inv.ssh_config or DEFAULT_SSH_CONFIG).expanduser()
    cfg: Mapping[str, Any] = {}
    if ssh_cfg_path.exists():
        cfg = _ssh_config_for(ssh_cfg_path, alias)
    port = entry.port
    if port is None:
        try:
            port = int(cfg.get("port", 22))
        except ValueError:
            raise ConfigError(f"{ssh_cfg_path}: Port for {alias!r} is not a number") from None
    identities: tuple[Path, ...]
    if entry.identity_file is not None:
        identities = (entry.identity_file,)
    else:
        identities = tuple(_expand(f) for f in cfg.get("identityfile", []) if _expand(f).exists())
    for ident in identities:
        if not ident.is_file():
            raise ConfigError(
                f"pool {name!r}: identity file {ident} does not exist: fix the pool's"
                " identity_file in the inventory"
            )
    if inv.known_hosts is not None:
        known_hosts = inv.known_hosts
    elif "userknownhostsfile" in cfg:
        known_hosts = _expand(str(cfg["userknownhostsfile"]).split()[0])
    else:
        known_hosts = DEFAULT_KNOWN_HOSTS.expanduser()
    if "proxyjump" in cfg:
        raise ConfigError(
            f"{ssh_cfg_path}: ProxyJump for {alias!r} is not supported by llorch; use"
            " ProxyCommand ssh -W %h:%p JUMPHOST instead"
        )
    proxy = cfg.get("proxycommand")
    timeout = connect_timeout
    if timeout is None:
        # ssh_config's ConnectTimeout when it is a usable number of seconds (CTL-014: at least
        # MIN_CONNECT_TIMEOUT), else the inventory's.
        try:
            timeout = float(cfg.get("connecttimeout", inv.connect_timeout))
        except ValueError:
            timeout = inv.connect_timeout
        if not timeout >= MIN_CONNECT_TIMEOUT:
            timeout = inv.connect_timeout
    # ssh_config's ServerAliveInterval when it is a number of seconds (0: no keepalives, as in
    # OpenSSH), else CTL-014's 15 s.
    try:
        keepalive = float(cfg.get("serveraliveinterval", DEFAULT_KEEPALIVE_S))
    except ValueError:
        keepalive = DEFAULT_KEEPALIVE_S
    if not keepalive >= 0:
        keepalive = DEFAULT_KEEPALIVE_S
    return SshTarget(
        pool=name,
        hostname=str(cfg.get("hostname", alias)),
        port=port,
        user=entry.user or str(cfg.get("user", "")) or getpass.getuser(),
        identity_files=identities,
        known_hosts=known_hosts,
        connect_timeout=timeout,
        pool_cmd=entry.pool_cmd,
        env=entry.env,
        proxy_command=str(proxy) if proxy else None,
        keepalive_s=keepalive,
    )
