"""The inventory file: what it accepts, what it refuses (one clear error), ~/.ssh/config merging."""

from __future__ import annotations

import getpass
from pathlib import Path

import pytest

from llorch_ctl.errors import ConfigError, UnknownPool
from llorch_ctl.inventory import load_inventory, parse_inventory, resolve_target


def test_full_inventory_and_ssh_config_merge(tmp_path: Path) -> None:
    key = tmp_path / "id_test"
    key.write_text("not checked here")
    (tmp_path / "ssh_config").write_text(
        "Host gpu1\n  HostName 10.0.0.7\n  Port 2222\n  User ops\n"
        f"  IdentityFile {key}\n  ConnectTimeout 3\n"
    )
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'ssh_config = "{tmp_path / "ssh_config"}"\n'
        f'known_hosts = "{tmp_path / "kh"}"\n'
        '[orchestrator]\nurl = "http://orch:8080"\napi_key = "k"\n'
        '[pools.gpu1]\npool_cmd = "~/venv/bin/llorch-pool"\nenv = { LLORCH_HOME = "/srv/l" }\n'
        '[pools.laptop]\nhost = "127.0.0.1"\nuser = "me"\nport = 2200\n'
    )
    inv = load_inventory(cfg)
    assert (inv.orch_url, inv.api_key) == ("http://orch:8080", "k")
    t = resolve_target(inv, "gpu1")
    assert (t.hostname, t.port, t.user, t.identity_files) == ("10.0.0.7", 2222, "ops", (key,))
    assert t.connect_timeout == 3.0
    assert t.known_hosts == tmp_path / "kh"
    assert t.pool_cmd == "~/venv/bin/llorch-pool"
    assert dict(t.env) == {"LLORCH_HOME": "/srv/l"}
    assert t.host_key_name == "[10.0.0.7]:2222"
    t2 = resolve_target(inv, "laptop", connect_timeout=1.5)
    assert (t2.hostname, t2.port, t2.user, t2.connect_timeout) == ("127.0.0.1", 2200, "me", 1.5)
    assert t2.pool_cmd == "llorch-pool"


def test_inventory_values_win_over_ssh_config(tmp_path: Path) -> None:
    (tmp_path / "ssh_config").write_text("Host box\n  Port 2222\n  User ops\n")
    inv = parse_inventory(
        {
            "ssh_config": str(tmp_path / "ssh_config"),
            "pools": {"box": {"port": 22, "user": "root"}},
        }
    )
    t = resolve_target(inv, "box")
    assert (t.hostname, t.port, t.user) == ("box", 22, "root")
    assert t.host_key_name == "box"


def test_defaults_without_any_config(tmp_path: Path) -> None:
    inv = parse_inventory({"ssh_config": str(tmp_path / "none"), "pools": {"h": {}}})
    t = resolve_target(inv, "h")
    assert (t.hostname, t.port, t.user) == ("h", 22, getpass.getuser())


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ({"pools": {"a": {"port": "22"}}}, "port must be an integer"),
        ({"pools": {"a": {"port": 70000}}}, "port must be an integer"),
        ({"pools": {"a": {"hots": "x"}}}, "unknown key(s) hots"),
        ({"pools": {"a": {"env": {"A": 1}}}}, "env must be a table"),
        ({"pools": {"a": "x"}}, "must be a table"),
        ({"connect_timeout": 0}, "connect_timeout"),
        ({"orchestrator": {"uri": "x"}}, "unknown key(s) uri"),
        ({"pool": {}}, "unknown key(s) pool"),
    ],
)
def test_bad_inventory_is_one_clear_error(doc: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_inventory(doc)
    assert needle in e.value.message


def test_files_that_are_missing_or_broken(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_inventory(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[pools\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_inventory(bad)
    inv = parse_inventory({"pools": {"a": {"identity_file": str(tmp_path / "missing")}}})
    with pytest.raises(ConfigError, match="identity file"):
        resolve_target(inv, "a")


def test_unknown_pool_names_the_known_ones() -> None:
    inv = parse_inventory({"pools": {"b": {}, "a": {}}})
    with pytest.raises(UnknownPool) as e:
        inv.pool("c")
    assert "known pools: a, b" in e.value.message
    assert e.value.exit_code == 201
