"""The inventory file: what it accepts, what it refuses (one clear error), ~/.ssh/config merging."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
from pathlib import Path

import pytest

from llorch_ctl.errors import ConfigError, UnknownPool
from llorch_ctl.inventory import load_inventory, parse_inventory, resolve_target
from tests.llorch_ctl.conftest import LLORCH, toml_str


def test_full_inventory_and_ssh_config_merge(tmp_path: Path) -> None:
    """CTL-002, CTL-003, CTL-014: every inventory key is read; ssh_config fills in HostName,
    Port, User, IdentityFile and ConnectTimeout; --connect-timeout wins over both."""
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


def test_an_unusable_ssh_config_connect_timeout_gives_the_inventorys(tmp_path: Path) -> None:
    """CTL-014: the connect timeout is at least 0.1 s; an ssh_config ConnectTimeout below that
    (or not a number) is not used, the inventory's is."""
    for value in ("0", "0.05", "soon"):
        (tmp_path / "ssh_config").write_text(f"Host box\n  ConnectTimeout {value}\n")
        inv = parse_inventory(
            {"ssh_config": str(tmp_path / "ssh_config"), "connect_timeout": 7, "pools": {"box": {}}}
        )
        assert resolve_target(inv, "box").connect_timeout == 7.0, value


def test_inventory_values_win_over_ssh_config(tmp_path: Path) -> None:
    """CTL-003: what the inventory says wins over ssh_config, as OpenSSH's command line does."""
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
        ({"connect_timeout": 0.05}, "connect_timeout must be a number of seconds, at least 0.1"),
        ({"orchestrator": {"uri": "x"}}, "unknown key(s) uri"),
        ({"pool": {}}, "unknown key(s) pool"),
    ],
)
def test_bad_inventory_is_one_clear_error(doc: dict[str, object], needle: str) -> None:
    """CTL-002, CTL-014: an unknown key, a wrong type, a bad port or a connect timeout under
    0.1 s is one ConfigError (exit 200) naming the key."""
    with pytest.raises(ConfigError) as e:
        parse_inventory(doc)
    assert needle in e.value.message
    assert e.value.exit_code == 200


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


def test_default_inventory_may_be_absent_but_a_named_one_must_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CTL-002: without --config the default ~/.config/llorch/config.toml is read when it is
    there and means "no pools" when it is not; a file named by --config or LLORCH_CONFIG must
    exist (exit 200)."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert load_inventory(None).pools == {}
    default = home / ".config" / "llorch" / "config.toml"
    default.parent.mkdir(parents=True)
    default.write_text('[pools.gpu1]\nhost = "10.0.0.7"\n')
    inv = load_inventory(None)
    assert (inv.path, list(inv.pools)) == (default, ["gpu1"])
    default.unlink()
    env = {**os.environ, "HOME": str(home)}
    empty = subprocess.run(
        [*LLORCH, "pool", "status"], capture_output=True, text=True, env=env, timeout=60
    )
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.split() == ["POOL", "ADDRESS", "STATE", "WORKERS", "DETAIL"]
    missing = tmp_path / "missing.toml"
    env["LLORCH_CONFIG"] = str(missing)
    for args in (["pool", "status"], ["pool", "backends", "--host", "gpu1"]):
        r = subprocess.run([*LLORCH, *args], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 200
        assert r.stderr == (
            f"llorch: inventory {missing} does not exist: create it, or name another with"
            " --config\n"
        )


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[pools.a]\nport = 70000\n", "port"),
        ('[pools.a]\nport = "22"\n', "port"),
        ('[pools.a]\nhots = "x"\n', "hots"),
        ("[orchestrator]\napi_key = 7\n", "api_key"),
        ('connect_timeout = "soon"\n', "connect_timeout"),
    ],
)
def test_inventory_file_errors_name_the_file_and_the_key(
    tmp_path: Path, text: str, key: str
) -> None:
    """CTL-002, CTL-040: a bad key in the file is one line on stderr naming the file and the
    key, exit 200, before anything is connected to."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_inventory(cfg)
    assert str(cfg) in e.value.message and key in e.value.message
    r = subprocess.run(
        [*LLORCH, "--config", str(cfg), "pool", "status"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 200
    assert r.stderr == f"llorch: {e.value.message}\n"


def test_unreadable_inventory_is_a_config_error(tmp_path: Path) -> None:
    """CTL-002: an inventory that cannot be read (here a directory) is one error naming it."""
    with pytest.raises(ConfigError) as e:
        load_inventory(tmp_path)
    assert e.value.message.startswith(f"cannot read inventory {tmp_path}: ")
    assert e.value.exit_code == 200


def test_loading_connects_nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CTL-002: loading the inventory neither resolves nor connects to anything."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("loading the inventory touched the network")

    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"known_hosts = {toml_str(tmp_path / 'kh')}\nssh_config = {toml_str(tmp_path / 'sc')}\n"
        '[orchestrator]\nurl = "http://orch.example:8080"\ncluster_token = "t"\n'
        'admin_token = "a"\n[pools.gpu1]\nhost = "gpu1.example"\nuser = "ops"\nport = 22\n'
    )
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    inv = load_inventory(cfg)
    assert (inv.cluster_token, inv.admin_token) == ("t", "a")
    assert inv.pool("gpu1").host == "gpu1.example"


def test_ssh_config_known_hosts_file_and_unsupported_match_exec(tmp_path: Path) -> None:
    """CTL-003, CTL-013: ssh_config's UserKnownHostsFile is where the host key is looked up
    unless the inventory names a known_hosts; `Match exec` is refused (exit 200, naming it)."""
    sc = tmp_path / "ssh_config"
    sc.write_text("Host box\n  UserKnownHostsFile ~/kh-from-ssh-config /etc/other\n")
    inv = parse_inventory({"ssh_config": str(sc), "pools": {"box": {}}})
    assert resolve_target(inv, "box").known_hosts == Path("~/kh-from-ssh-config").expanduser()
    inv = parse_inventory(
        {"ssh_config": str(sc), "known_hosts": str(tmp_path / "kh"), "pools": {"box": {}}}
    )
    assert resolve_target(inv, "box").known_hosts == tmp_path / "kh"
    sc.write_text('Match exec "true"\n  Port 2222\n')
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'ssh_config = {toml_str(sc)}\n[pools.box]\nhost = "127.0.0.1"\n')
    r = subprocess.run(
        [*LLORCH, "--config", str(cfg), "pool", "backends", "--host", "box"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 200
    assert r.stderr == f"llorch: ssh config {sc}: `Match exec` is not supported by llorch\n"


def test_default_known_hosts_is_the_users(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CTL-013: with neither the inventory nor ssh_config naming one, ~/.ssh/known_hosts."""
    monkeypatch.setenv("HOME", str(tmp_path))
    inv = parse_inventory({"ssh_config": str(tmp_path / "none"), "pools": {"h": {}}})
    assert resolve_target(inv, "h").known_hosts == tmp_path / ".ssh" / "known_hosts"
