"""`llorch pool ...` against a real OpenSSH sshd on loopback: streaming, status, quoting, keys.

CTL-050: every test here talks to a real `sshd` (conftest.py, sshd.py) and shows one of the
behaviours the spec lists; the real llorch-pool over SSH is in test_pool_remote.py.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import pwd
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from llorch_ctl.errors import (
    AuthFailed,
    ConfigError,
    ConnectionRefused,
    HostKeyUnknown,
    NameUnresolved,
    UnknownPool,
)
from llorch_ctl.inventory import load_inventory, resolve_target
from llorch_ctl.transport import ParamikoTransport
from tests import support
from tests.llorch_ctl import conftest
from tests.llorch_ctl.conftest import (
    LLORCH,
    Ctl,
    pool_for,
    start_test_sshd,
    toml_str,
    write_inventory,
)
from tests.llorch_ctl.sshd import Sshd, keygen, stop_sshd
from tests.support import free_port, require

pytestmark = [pytest.mark.ssh, pytest.mark.e2e]

PY = shlex.quote(sys.executable)
ECHO_ARGV = f"{PY} -c " + shlex.quote(
    "import sys, json, os; print(json.dumps({'argv': sys.argv[1:],"
    " 'home': os.environ.get('LLORCH_HOME')}))"
)
STREAMER = """\
import os, sys, time
marker = sys.argv[-1]
sys.stdout.write("10%\\r"); sys.stdout.flush()
sys.stderr.write("warming up\\n"); sys.stderr.flush()
deadline = time.monotonic() + 20
while not os.path.exists(marker):
    if time.monotonic() > deadline:
        sys.stderr.write("the client never saw the first chunk\\n"); sys.exit(3)
    time.sleep(0.02)
sys.stdout.write("100%\\ndone\\n")
sys.exit(5)
"""


def trusted(tmp_path: Path, sshd: Sshd, pool_cmd: str, **extra: object) -> Ctl:
    ctl = write_inventory(tmp_path, {"a": pool_for(sshd, pool_cmd, **extra)})
    ctl.known_hosts.write_text(sshd.known_hosts_line())
    return ctl


def test_output_streams_live_and_exit_status_comes_back(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-011, CTL-020, CTL-050: a progress chunk without newline reaches our stdout while the
    remote still runs (it waits for proof of that), stderr stays apart, the exit status is
    the remote one."""
    # The remote waits for a file we create only after its first chunk (a progress bar with
    # no newline) reached us: buffered output would make it give up with exit 3.
    script = tmp_path / "streamer.py"
    script.write_text(STREAMER)
    marker = tmp_path / "seen"
    ctl = trusted(tmp_path, sshd, f"{PY} {shlex.quote(str(script))}")
    proc = subprocess.Popen(
        [
            *LLORCH,
            "--config",
            str(ctl.config),
            "pool",
            "worker",
            "logs",
            "--host",
            "a",
            str(marker),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = b""
    while b"10%\r" not in first:
        chunk = os.read(proc.stdout.fileno(), 4096)
        if not chunk:
            break
        first += chunk
    assert first == b"10%\r", "the progress chunk did not arrive on its own"
    marker.touch()
    out, err = proc.communicate(timeout=30)
    assert first + out == b"10%\r100%\ndone\n"
    assert b"warming up\n" in err
    assert proc.returncode == 5


def test_transport_streams_chunks_before_the_command_ends(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-011: the transport hands over each chunk as it arrives, stdout and stderr apart."""
    script = tmp_path / "streamer.py"
    script.write_text(STREAMER)
    marker = tmp_path / "seen"
    ctl = trusted(tmp_path, sshd, f"{PY} {shlex.quote(str(script))}")
    target = resolve_target(load_inventory(ctl.config), "a")
    out: list[bytes] = []
    err: list[bytes] = []

    def on_out(data: bytes) -> None:
        out.append(data)
        if b"10%\r" in b"".join(out):
            marker.touch()

    status = ParamikoTransport(target).run(["x", str(marker)], on_out, err.append)
    assert status == 5
    assert b"".join(out) == b"10%\r100%\ndone\n"
    assert b"".join(err) == b"warming up\n"


def test_arguments_arrive_verbatim(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-012, CTL-020: shell metacharacters, globs, `~`, empty strings and newlines arrive
    verbatim and run nothing."""
    pwned = tmp_path / "pwned"
    nasty = [
        "two words",
        "it's",
        '"double"',
        f"$(touch {pwned})",
        f"; touch {pwned}",
        f"`touch {pwned}`",
        f"| touch {pwned}",
        "*",
        "~",
        "$HOME",
        "",
        "back\\slash",
        "new\nline",
        "--json",
    ]
    ctl = trusted(tmp_path, sshd, ECHO_ARGV)
    r = ctl.run("pool", "models", "import", "--host", "a", "--", *nasty)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["argv"] == ["models", "import", *nasty]
    assert not pwned.exists()


def test_remote_options_and_json_pass_through(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-020, CTL-012: --json and a later --host are llorch-pool's; env values arrive."""
    ctl = trusted(tmp_path, sshd, ECHO_ARGV, env={"LLORCH_HOME": "/srv/llorch home"})
    # The first --host is the pool; the second is llorch-pool's own (spawn's bind address).
    r = ctl.run(
        "pool",
        "worker",
        "spawn",
        "cpu",
        "--host",
        "a",
        "--model",
        "tiny q4",
        "--host",
        "0.0.0.0",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["argv"] == [
        "worker",
        "spawn",
        "cpu",
        "--model",
        "tiny q4",
        "--host",
        "0.0.0.0",
        "--json",
    ]
    assert got["home"] == "/srv/llorch home"


def test_unknown_host_key_is_refused_and_not_saved(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-013: an unknown host key is refused (206), one line, known_hosts untouched."""
    ctl = write_inventory(tmp_path, {"a": pool_for(sshd, ECHO_ARGV)})
    r = ctl.run("pool", "backends", "--host", "a")
    assert r.returncode == 206
    assert r.stdout == ""
    assert "--accept-new-host-key" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not ctl.known_hosts.exists()


@pytest.mark.parametrize(
    "bad, why",
    [
        (b"host ssh-ed25519 !!!notbase64\n", "its key is not valid base64"),
        (b"@cert-authority * ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIA\n", "@cert-authority"),
        (b"h\xff ssh-ed25519 AAAA\n", "it is not UTF-8 text"),
    ],
)
def test_ctl_041_malformed_known_hosts_line_is_one_line_and_200(
    tmp_path: Path, bad: bytes, why: str
) -> None:
    """CTL-041, CTL-040: a known_hosts line paramiko cannot read is one stderr line naming the
    file and the line, exit 200 (ConfigError), before any connection: no sshd needed, and
    none listens on the pool's port (a connection attempt would be 203)."""
    pool = {"host": "127.0.0.1", "port": free_port(), "user": "u", "pool_cmd": "llorch-pool"}
    ctl = write_inventory(tmp_path, {"a": pool})
    ctl.known_hosts.write_bytes(b"# a comment\nother ssh-ed25519 AAAA\n" + bad)
    r = ctl.run("pool", "worker", "list", "--host", "a")
    assert r.returncode == 200, r.stderr
    assert r.stdout == "" and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith(f"llorch: cannot read known_hosts {ctl.known_hosts} line 3: ")
    assert why in r.stderr


def test_accept_new_host_key_saves_it_for_next_time(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-013: --accept-new-host-key appends the key under OpenSSH's `[host]:port` name, which
    OpenSSH's own client then accepts."""
    ctl = write_inventory(tmp_path, {"a": pool_for(sshd, ECHO_ARGV)})
    r = ctl.run("pool", "backends", "--host", "a", "--accept-new-host-key")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["argv"] == ["backends"]
    assert ctl.known_hosts.read_text() == sshd.known_hosts_line()
    again = ctl.run("pool", "backends", "--host", "a")
    assert again.returncode == 0, again.stderr
    # OpenSSH's own client agrees with what we saved.
    require(shutil.which("ssh") is not None, "the OpenSSH client is not installed")
    ssh = subprocess.run(
        [
            "ssh",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            f"UserKnownHostsFile={ctl.known_hosts}",
            "-i",
            str(sshd.client_key),
            "-p",
            str(sshd.port),
            f"{getpass.getuser()}@{sshd.host}",
            "true",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert ssh.returncode == 0, ssh.stderr


def test_changed_host_key_is_refused_even_when_accepting_new(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-013: a changed key is always refused (207), loudly, with how to remove the old line."""
    other = keygen(tmp_path / "impostor")
    kind, b64 = Path(f"{other}.pub").read_text().split()[:2]
    ctl = write_inventory(tmp_path, {"a": pool_for(sshd, ECHO_ARGV)})
    before = f"{sshd.key_name} {kind} {b64}\n"
    ctl.known_hosts.write_text(before)
    for extra in ([], ["--accept-new-host-key"]):
        r = ctl.run("pool", "worker", "list", "--host", "a", *extra)
        assert r.returncode == 207
        assert "HOST KEY CHANGED" in r.stderr
        assert f"ssh-keygen -R '{sshd.key_name}' -f {ctl.known_hosts}" in r.stderr
        assert r.stdout == ""
    assert ctl.known_hosts.read_text() == before


def test_auth_failure_is_its_own_error(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-040, CTL-004: a key the server rejects is AuthFailed (205); no password is asked."""
    stranger = keygen(tmp_path / "stranger")
    ctl = trusted(tmp_path, sshd, ECHO_ARGV, identity_file=str(stranger))
    r = ctl.run("pool", "worker", "list", "--host", "a")
    assert r.returncode == 205
    assert "rejected our keys" in r.stderr


def test_remote_pool_command_missing(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-021: the remote shell's 127 becomes one line saying to install llorch-pool or set
    pool_cmd, exit 127."""
    ctl = trusted(tmp_path, sshd, "/nonexistent/bin/llorch-pool")
    r = ctl.run("pool", "worker", "list", "--host", "a")
    assert r.returncode == 127
    ours = [line for line in r.stderr.splitlines() if line.startswith("llorch: ")]
    assert len(ours) == 1
    assert "install llorch-pool" in ours[0] and "set pool_cmd" in ours[0]
    assert r.stdout == ""


def test_connection_refused(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-040: connection refused is 203."""
    pool = pool_for(sshd, ECHO_ARGV, port=free_port())
    ctl = write_inventory(tmp_path, {"a": pool})
    r = ctl.run("pool", "worker", "list", "--host", "a")
    assert r.returncode == 203
    assert "connection refused" in r.stderr


def test_name_that_does_not_resolve(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-040: a name that does not resolve is 202."""
    ctl = write_inventory(tmp_path, {"a": pool_for(sshd, ECHO_ARGV, host="no-such-host.invalid")})
    r = ctl.run("pool", "worker", "list", "--host", "a")
    assert r.returncode == 202
    assert "no-such-host.invalid" in r.stderr


def test_unknown_pool(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-040: an unknown pool is 201 and the message lists the known ones."""
    ctl = trusted(tmp_path, sshd, ECHO_ARGV)
    r = ctl.run("pool", "worker", "list", "--host", "nope")
    assert r.returncode == 201
    assert "known pools: a" in r.stderr


def test_silent_server_times_out(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-014: a server that accepts TCP but never sends its banner is a timeout (204)."""
    # A TCP listener that never speaks SSH: the banner never comes.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        ctl = write_inventory(tmp_path, {"a": pool_for(sshd, ECHO_ARGV, port=port)})
        r = ctl.run("pool", "worker", "list", "--host", "a", "--connect-timeout", "1")
    assert r.returncode == 204
    assert "within 1s" in r.stderr


def test_ssh_config_is_honoured(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-003: HostName, Port, User and IdentityFile come from ssh_config, looked up by host."""
    user = getpass.getuser()
    (tmp_path / "ssh_config").write_text(
        f"Host box-alias\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {user}\n"
        f"  IdentityFile {sshd.client_key}\n"
    )
    ctl = write_inventory(tmp_path, {"a": {"host": "box-alias", "pool_cmd": ECHO_ARGV}})
    ctl.known_hosts.write_text(sshd.known_hosts_line())
    r = ctl.run("pool", "models", "list", "--host", "a", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["argv"] == ["models", "list", "--json"]


def test_pool_status_asks_every_pool_and_prints_one_table(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-022: every pool is asked at once (each remote lister waits until the others have
    started, which pools asked one after another never do), one table in inventory order,
    `error` with the reason for a pool that failed (exit 1); --json for the named pools."""
    barrier = tmp_path / "started"
    lister = tmp_path / "lister.py"
    lister.write_text(
        "import json, os, sys, time\n"
        "assert sys.argv[1:] == ['worker', 'list', '--json'], sys.argv\n"
        "here = os.environ['BARRIER']\n"
        "open(os.path.join(here, os.environ['POOL']), 'w').close()\n"
        "deadline = time.monotonic() + 20\n"
        "while len(os.listdir(here)) < int(os.environ['PEERS']):\n"
        "    if time.monotonic() > deadline:\n"
        "        sys.exit('the other pools were not asked at the same time')\n"
        "    time.sleep(0.05)\n"
        "print(json.dumps([{'id': 'w1', 'model': 'tiny', 'port': 8001, 'status': 'ready'}]))\n"
    )
    cmd = f"{PY} {shlex.quote(str(lister))}"

    def pool(name: str, **extra: object) -> dict[str, object]:
        env = {"POOL": name, "PEERS": "2", "BARRIER": str(barrier)}
        return pool_for(sshd, cmd, env=env, **extra)

    pools = {"west": pool("west"), "down": pool("down", port=free_port()), "east": pool("east")}
    ctl = write_inventory(tmp_path, pools)
    ctl.known_hosts.write_text(sshd.known_hosts_line())
    barrier.mkdir()
    r = ctl.run("pool", "status")
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["POOL", "ADDRESS", "STATE", "WORKERS", "DETAIL"]
    assert [line.split()[0] for line in lines[1:]] == ["west", "down", "east"]
    rows = {line.split()[0]: line for line in lines[1:]}
    for name in ("east", "west"):
        assert rows[name].split()[2:5] == ["ok", "1", "w1:tiny@8001(ready)"]
    assert rows["down"].split()[2:4] == ["error", "-"]
    assert "connection refused" in rows["down"]
    shutil.rmtree(barrier)
    barrier.mkdir()
    j = ctl.run("pool", "status", "--json", "--host", "east", "--host", "west")
    assert j.returncode == 0, j.stderr
    got = json.loads(j.stdout)
    assert [p["pool"] for p in got] == ["east", "west"]
    assert all(set(p) == {"pool", "address", "ok", "error", "workers"} for p in got)
    assert all(p["ok"] and p["error"] is None and len(p["workers"]) == 1 for p in got)


def test_ctrl_c_closes_the_session_with_one_line(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-015: Ctrl-C closes the SSH session (the remote command then finds its output pipe
    closed) and exits 130 with one line."""
    closed = tmp_path / "pipe-closed"
    ticker = tmp_path / "ticker.py"
    ticker.write_text(
        "import sys, time\n"
        "print('started', flush=True)\n"
        "deadline = time.monotonic() + 30\n"
        "try:\n"
        "    while time.monotonic() < deadline:\n"
        "        time.sleep(0.1)\n"
        "        print('tick', flush=True)\n"
        "except BrokenPipeError:\n"
        f"    open({str(closed)!r}, 'w').close()\n"
    )
    ctl = trusted(tmp_path, sshd, f"{PY} {shlex.quote(str(ticker))}")
    proc = subprocess.Popen(
        [*LLORCH, "--config", str(ctl.config), "pool", "worker", "logs", "--host", "a"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"started\n"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert err.decode().strip().splitlines() == [
        "llorch: interrupted; closed the SSH session to pool 'a'"
    ]
    deadline = time.monotonic() + 20
    while not closed.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed.exists(), "the remote command still had a reader after llorch exited"


def test_ssh_config_proxy_command_is_used(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-003: ssh_config's ProxyCommand (`ssh -W %h:%p`) is run; ProxyJump is refused (200)."""
    require(shutil.which("ssh") is not None, "the OpenSSH client is not installed")
    user = getpass.getuser()
    used = tmp_path / "proxy-used"
    kh = tmp_path / "known_hosts"
    jump = (
        f"ssh -F /dev/null -o BatchMode=yes -o UserKnownHostsFile={kh} -i {sshd.client_key}"
        f" -p {sshd.port} {user}@{sshd.host} -W %h:%p"
    )
    (tmp_path / "ssh_config").write_text(
        f"Host behind-jump\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {user}\n"
        f"  IdentityFile {sshd.client_key}\n"
        f"  ProxyCommand sh -c 'touch {used}; exec {jump}'\n"
        "Host via-proxyjump\n  ProxyJump somewhere\n"
    )
    ctl = write_inventory(
        tmp_path,
        {
            "a": {"host": "behind-jump", "pool_cmd": ECHO_ARGV},
            "b": {"host": "via-proxyjump", "pool_cmd": ECHO_ARGV},
        },
        known_hosts=kh,
    )
    kh.write_text(sshd.known_hosts_line())
    r = ctl.run("pool", "backends", "--host", "a", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["argv"] == ["backends", "--json"]
    assert used.exists()
    j = ctl.run("pool", "backends", "--host", "b")
    assert j.returncode == 200
    assert "ProxyJump" in j.stderr


@contextlib.contextmanager
def ssh_agent(tmp_path: Path) -> Iterator[Path]:
    """A real ssh-agent of its own, holding no key yet; yields its socket."""
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
        yield sock
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_ssh_agent_keys_are_used(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-004: keys from ssh-agent (SSH_AUTH_SOCK) are used."""
    require(shutil.which("ssh-agent") is not None, "ssh-agent is not installed")
    with ssh_agent(tmp_path) as sock:
        env = {"SSH_AUTH_SOCK": str(sock)}
        pool = pool_for(sshd, ECHO_ARGV)
        del pool["identity_file"]  # only the agent holds the key
        ctl = write_inventory(tmp_path, {"a": pool})
        ctl.known_hosts.write_text(sshd.known_hosts_line())
        without = ctl.run("pool", "backends", "--host", "a", env=env)
        assert without.returncode == 205, without.stderr
        subprocess.run(
            ["ssh-add", "-q", str(sshd.client_key)],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        r = ctl.run("pool", "backends", "--host", "a", env=env)
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["argv"] == ["backends"]


def test_remote_killed_by_a_signal_has_no_exit_status(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-040: a session that ends without an exit status is ConnectionLost (209)."""
    ctl = trusted(tmp_path, sshd, "sh -c 'echo partial; kill -KILL $$'")
    r = ctl.run("pool", "worker", "list", "--host", "a")
    assert r.returncode == 209
    assert r.stdout == "partial\n"
    assert "without an exit status" in r.stderr


@pytest.mark.parametrize("strict", [False, True])
def test_missing_sshd_skips_or_fails_under_strict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, strict: bool
) -> None:
    """CTL-050: without an sshd the SSH tests skip, or fail under LLORCH_TEST_STRICT=1."""
    monkeypatch.setattr(conftest, "SSHD", str(tmp_path / "no-sshd"))
    monkeypatch.setattr(support, "STRICT", strict)
    outcome = pytest.fail.Exception if strict else pytest.skip.Exception
    with pytest.raises(outcome, match="sshd is not installed"):
        start_test_sshd(tmp_path, "127.0.0.1", tmp_path / "id_none")


def fingerprint(key: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{key}.pub"], capture_output=True, text=True, check=True
    )
    return out.stdout.split()[1]


def run_clean(ctl: Ctl, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`llorch --config ... ARGS` with no ssh-agent unless `env` names one."""
    base = {k: v for k, v in os.environ.items() if k != "SSH_AUTH_SOCK"}
    return subprocess.run(
        [*LLORCH, "--config", str(ctl.config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **env},
    )


def test_identity_files_then_agent_then_home_keys(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-004: ~/.ssh/id_* is used only when no identity file is configured (inventory or
    ssh_config); a configured identity file is offered before the agent's keys."""
    require(shutil.which("ssh-agent") is not None, "ssh-agent is not installed")
    stranger = keygen(tmp_path / "stranger")
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd.client_key, home / ".ssh" / "id_ed25519")
    user = getpass.getuser()
    (tmp_path / "ssh_config").write_text(
        f"Host via-config\n  HostName {sshd.host}\n  Port {sshd.port}\n  User {user}\n"
        f"  IdentityFile {stranger}\n"
    )
    plain = pool_for(sshd, ECHO_ARGV)
    del plain["identity_file"]
    ctl = write_inventory(
        tmp_path,
        {
            "plain": plain,
            "inv-key": pool_for(sshd, ECHO_ARGV, identity_file=str(stranger)),
            "cfg-key": {"host": "via-config", "pool_cmd": ECHO_ARGV},
        },
    )
    ctl.known_hosts.write_text(sshd.known_hosts_line())
    r = run_clean(ctl, "pool", "backends", "--host", "plain", HOME=str(home))
    assert r.returncode == 0, r.stderr
    for pool in ("inv-key", "cfg-key"):
        r = run_clean(ctl, "pool", "backends", "--host", pool, HOME=str(home))
        assert r.returncode == 205, (pool, r.stderr)

    with ssh_agent(tmp_path) as sock:
        subprocess.run(
            ["ssh-add", "-q", str(sshd.client_key)],
            env={**os.environ, "SSH_AUTH_SOCK": str(sock)},
            check=True,
            capture_output=True,
        )
        seen = len(sshd.log_text())
        r = run_clean(ctl, "pool", "backends", "--host", "inv-key", SSH_AUTH_SOCK=str(sock))
        assert r.returncode == 0, r.stderr
    log = sshd.log_text()[seen:]
    rejected = log.index(f"Failed publickey for {user} from 127.0.0.1")
    assert log[rejected:].split("\n", 1)[0].endswith(fingerprint(stranger))
    accepted = log.index(f"Accepted publickey for {user} from 127.0.0.1")
    assert log[accepted:].split("\n", 1)[0].endswith(fingerprint(sshd.client_key))
    assert rejected < accepted


def test_pool_cmd_is_shell_text_and_stdin_is_closed(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-012: pool_cmd is operator-written shell text inserted as is (`cd X && ...`, a `~`
    there is the remote home), the arguments follow it quoted, and stdin is closed."""
    work = tmp_path / "work dir"
    work.mkdir()
    script = tmp_path / "show.py"
    script.write_text(
        "import json, os, sys\n"
        "print(json.dumps({'cwd': os.getcwd(), 'argv': sys.argv[1:], 'stdin': sys.stdin.read()}))\n"
    )
    ctl = trusted(
        tmp_path, sshd, f"cd {shlex.quote(str(work))} && {PY} {shlex.quote(str(script))} ~"
    )
    # A remote that reads stdin would wait for ever if stdin were left open.
    r = ctl.run("pool", "models", "list", "--host", "a", "~", timeout=30)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["cwd"] == str(work)
    assert got["argv"] == [pwd.getpwnam(getpass.getuser()).pw_dir, "models", "list", "~"]
    assert got["stdin"] == ""


def test_known_hosts_from_ssh_config_with_hashed_entries(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-013: without an inventory known_hosts, ssh_config's UserKnownHostsFile is read, and
    its hashed entries (`ssh-keygen -H`) are understood."""
    kh = tmp_path / "hashed_known_hosts"
    kh.write_text(sshd.known_hosts_line())
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(kh)], check=True, capture_output=True)
    assert kh.read_text().startswith("|1|") and sshd.host not in kh.read_text()
    sc = tmp_path / "ssh_config"
    sc.write_text(
        f"Host box\n  HostName {sshd.host}\n  Port {sshd.port}\n  UserKnownHostsFile {kh}\n"
    )
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'ssh_config = {toml_str(sc)}\n[pools.a]\nhost = "box"\n'
        f"user = {toml_str(getpass.getuser())}\nidentity_file = {toml_str(sshd.client_key)}\n"
        f"pool_cmd = {toml_str(ECHO_ARGV)}\n"
    )
    home = tmp_path / "home"
    home.mkdir()
    r = Ctl(tmp_path, cfg, kh).run("pool", "backends", "--host", "a", env={"HOME": str(home)})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["argv"] == ["backends"]
    assert not (home / ".ssh").exists()


def test_accept_new_writes_the_default_known_hosts_privately(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-013: with no other known_hosts named, an accepted key goes to ~/.ssh/known_hosts,
    created 0700 / 0600, and is trusted from then on."""
    home = tmp_path / "home"
    home.mkdir()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f"[pools.a]\nhost = {toml_str(sshd.host)}\nport = {sshd.port}\n"
        f"user = {toml_str(getpass.getuser())}\nidentity_file = {toml_str(sshd.client_key)}\n"
        f"pool_cmd = {toml_str(ECHO_ARGV)}\n"
    )
    kh = home / ".ssh" / "known_hosts"
    ctl = Ctl(tmp_path, cfg, kh)
    env = {"HOME": str(home)}
    assert ctl.run("pool", "backends", "--host", "a", env=env).returncode == 206
    r = ctl.run("pool", "backends", "--host", "a", "--accept-new-host-key", env=env)
    assert r.returncode == 0, r.stderr
    assert kh.read_text() == sshd.known_hosts_line()
    assert stat.S_IMODE(kh.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(kh.stat().st_mode) == 0o600
    again = ctl.run("pool", "backends", "--host", "a", env=env)
    assert again.returncode == 0, again.stderr


def test_system_known_hosts_is_trusted(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-013: a key in /etc/ssh/ssh_known_hosts is trusted (put there in a private mount
    namespace, so the machine's own file is not touched)."""
    require(os.geteuid() == 0, "bind-mounting over /etc/ssh needs root")
    require(shutil.which("unshare") is not None, "unshare (util-linux) is not installed")
    etc = tmp_path / "etc-ssh"
    etc.mkdir()
    (etc / "ssh_known_hosts").write_text(sshd.known_hosts_line())
    ctl = write_inventory(tmp_path, {"a": pool_for(sshd, ECHO_ARGV)})
    llorch = [*LLORCH, "--config", str(ctl.config), "pool", "backends", "--host", "a"]
    inner = f"mount --bind {shlex.quote(str(etc))} /etc/ssh && exec {shlex.join(llorch)}"
    r = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", inner],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["argv"] == ["backends"]
    assert not ctl.known_hosts.exists()
    outside = ctl.run("pool", "backends", "--host", "a")
    assert outside.returncode == 206


def test_tcp_connect_without_answer_times_out(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-014: a TCP connect nobody answers (a listener whose backlog is full drops our SYN)
    is a timeout (204)."""
    with contextlib.ExitStack() as stack:
        full = stack.enter_context(socket.socket())
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        port = full.getsockname()[1]
        for _ in range(8):  # fill the accept queue until a connect goes unanswered
            filler = stack.enter_context(socket.socket())
            filler.settimeout(0.5)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.fail("could not fill the listener's backlog")
        ctl = write_inventory(tmp_path, {"a": pool_for(sshd, ECHO_ARGV, port=port)})
        r = ctl.run("pool", "worker", "list", "--host", "a", "--connect-timeout", "1")
    assert r.returncode == 204, r.stderr
    assert r.stderr == f"llorch: no answer from 127.0.0.1:{port} (pool 'a') within 1s\n"


def test_key_exchange_that_never_finishes_times_out(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-014: a server that sends its banner but never its key exchange is a timeout (204)."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(8)
        port = mute.getsockname()[1]
        held: list[socket.socket] = []

        def greet() -> None:
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = mute.accept()
                    conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                    held.append(conn)

        threading.Thread(target=greet, daemon=True).start()
        ctl = write_inventory(tmp_path, {"a": pool_for(sshd, ECHO_ARGV, port=port)})
        r = ctl.run("pool", "worker", "list", "--host", "a", "--connect-timeout", "1")
        for conn in held:
            conn.close()
    assert r.returncode == 204, r.stderr
    assert "did not complete the SSH handshake within 1s" in r.stderr


def test_login_that_is_never_answered_times_out(tmp_path: Path, client_key: Path) -> None:
    """CTL-014: a server that never answers our login (its AuthorizedKeysCommand hangs) is a
    timeout (204), not a rejected key."""
    hang = f"AuthorizedKeysCommand /bin/sleep 10\nAuthorizedKeysCommandUser {getpass.getuser()}\n"
    slow = start_test_sshd(tmp_path / "sshd", "127.0.0.1", client_key, extra_config=hang)
    try:
        # The client key is in the authorized file; any other key asks the hanging command.
        stranger = keygen(tmp_path / "stranger")
        ctl = trusted(tmp_path, slow, ECHO_ARGV, identity_file=str(stranger))
        r = run_clean(ctl, "pool", "worker", "list", "--host", "a", "--connect-timeout", "1")
    finally:
        stop_sshd(slow)
    assert r.returncode == 204, r.stderr
    assert "did not answer our login within 1s" in r.stderr


def test_ctl_014_keepalives_go_out_while_the_command_runs_silent(
    tmp_path: Path, client_key: Path
) -> None:
    """CTL-014: while the remote command runs and prints nothing, the session sends SSH
    keepalives, counted in the server's own log: every 15 s by default, at ssh_config's
    ServerAliveInterval when it sets one (here 1 s, so that the test takes seconds), none with 0."""
    chatty = start_test_sshd(tmp_path / "sshd", "127.0.0.1", client_key, log_level="DEBUG")
    try:
        ctl = trusted(tmp_path, chatty, f"sleep 3.5; {ECHO_ARGV}")
        counts = {}
        for interval in ("1", "0"):
            (tmp_path / "ssh_config").write_text(f"Host *\n  ServerAliveInterval {interval}\n")
            before = chatty.log_text().count("keepalive@lag.net")
            r = ctl.run("pool", "worker", "list", "--host", "a")
            assert r.returncode == 0, r.stderr
            counts[interval] = chatty.log_text().count("keepalive@lag.net") - before
    finally:
        stop_sshd(chatty)
    assert counts["1"] >= 2, counts
    assert counts["0"] == 0, counts
    (tmp_path / "ssh_config").write_text("")
    inv = load_inventory(ctl.config)
    assert resolve_target(inv, "a").keepalive_s == 15


def test_connect_timeout_does_not_limit_the_running_command(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-014: the connect timeout bounds connecting only, not the command; under 0.1 s it is
    a usage error."""
    ctl = trusted(tmp_path, sshd, f"echo begun; sleep 3; {ECHO_ARGV}")
    r = ctl.run("pool", "worker", "logs", "--host", "a", "--connect-timeout", "1.5")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("begun\n")
    assert json.loads(r.stdout.split("\n", 1)[1])["argv"] == ["worker", "logs"]
    short = ctl.run("pool", "worker", "logs", "--host", "a", "--connect-timeout", "0.05")
    assert short.returncode == 2
    assert "--connect-timeout" in short.stderr


TYPER_ONLY = (
    "import sys\nfrom llorch_ctl.cli import _run_typer\nsys.exit(_run_typer(sys.argv[1:]))\n"
)


def test_fast_path_and_typer_send_the_same_remote_line(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-020, CTL-032: the typer-free fast path and typer run the same remote command for
    the same line (first --host and --connect-timeout ours, the rest llorch-pool's in order,
    `-- --help` the remote's) and exit with its status."""
    exit7 = "import sys, json; print(json.dumps({'argv': sys.argv[1:]})); sys.exit(7)"
    ctl = trusted(tmp_path, sshd, f"{PY} -c {shlex.quote(exit7)}")
    line = [
        "--config",
        str(ctl.config),
        "pool",
        "worker",
        "spawn",
        "cpu",
        "--connect-timeout",
        "5",
        "--host",
        "a",
        "--model",
        "m",
        "--host",
        "10.0.0.2",
        "--connect-timeout",
        "9",
        "--json",
        "--",
        "--help",
    ]
    fast = subprocess.run([*LLORCH, *line], capture_output=True, text=True, timeout=60)
    slow = subprocess.run(
        [sys.executable, "-c", TYPER_ONLY, *line], capture_output=True, text=True, timeout=60
    )
    want = ["worker", "spawn", "cpu", "--model", "m", "--host", "10.0.0.2"]
    want += ["--connect-timeout", "9", "--json", "--help"]
    for r in (fast, slow):
        assert r.returncode == 7, r.stderr
        assert json.loads(r.stdout)["argv"] == want


LOADED = """\
import json, sys
from llorch_ctl.cli import main
rc = main(sys.argv[2:])
loaded = sorted({name.split(".")[0] for name, mod in sys.modules.items() if mod is not None})
with open(sys.argv[1], "w") as f:
    json.dump({"rc": rc, "modules": loaded}, f)
"""


def test_commands_import_only_what_they_use(tmp_path: Path, sshd: Sshd) -> None:
    """CTL-032: a valid pool command runs without typer; httpx and the SDK are imported only
    by the HTTP commands, paramiko only by the SSH ones (start-up cost, see bench/ssh.py)."""
    ctl = trusted(tmp_path, sshd, ECHO_ARGV)
    out = tmp_path / "modules.json"

    def loaded(*args: str) -> tuple[int, set[str]]:
        subprocess.run(
            [sys.executable, "-c", LOADED, str(out), "--config", str(ctl.config), *args],
            capture_output=True,
            timeout=60,
            check=False,
        )
        got = json.loads(out.read_text())
        return got["rc"], set(got["modules"])

    http = {"httpx", "llorch_sdk"}
    rc, mods = loaded("pool", "worker", "list", "--host", "a")
    assert rc == 0
    assert "paramiko" in mods and "typer" not in mods and not http & mods
    rc, mods = loaded("pool", "status")
    assert rc == 0
    assert {"paramiko", "typer"} <= mods and not http & mods
    rc, mods = loaded("pool", "worker", "list")  # usage error: typer says what is missing
    assert rc == 2
    assert "typer" in mods and "paramiko" not in mods and not http & mods
    url = f"http://127.0.0.1:{free_port()}"
    rc, mods = loaded("tasks", "status", "t1", "--orchestrator-url", url)
    assert rc == 210
    assert http <= mods and "paramiko" not in mods
    rc, mods = loaded("--version")
    assert rc == 0
    assert not (http | {"paramiko"}) & mods


def test_every_failure_is_one_line_and_debug_shows_the_traceback(
    tmp_path: Path, sshd: Sshd
) -> None:
    """CTL-040: each failure is one `llorch: ...` line on stderr with its class's exit code
    and no traceback; --debug adds the traceback."""
    stranger = keygen(tmp_path / "stranger")
    ctl = trusted(tmp_path, sshd, ECHO_ARGV)
    pools = {
        "a": pool_for(sshd, ECHO_ARGV),
        "unresolved": pool_for(sshd, ECHO_ARGV, host="no-such-host.invalid"),
        "refused": pool_for(sshd, ECHO_ARGV, port=free_port()),
        "unknown-key": pool_for(sshd, ECHO_ARGV, host="localhost"),
        "rejected": pool_for(sshd, ECHO_ARGV, identity_file=str(stranger)),
    }
    ctl = write_inventory(tmp_path, pools)
    ctl.known_hosts.write_text(sshd.known_hosts_line())
    missing = ["--config", str(tmp_path / "missing.toml")]
    cases: list[tuple[list[str], int]] = [
        ([*missing, "pool", "backends", "--host", "a"], ConfigError.exit_code),
        (["pool", "backends", "--host", "nope"], UnknownPool.exit_code),
        (["pool", "backends", "--host", "unresolved"], NameUnresolved.exit_code),
        (["pool", "backends", "--host", "refused"], ConnectionRefused.exit_code),
        (["pool", "backends", "--host", "unknown-key"], HostKeyUnknown.exit_code),
        (["pool", "backends", "--host", "rejected"], AuthFailed.exit_code),
        (["infer", "--worker", f"127.0.0.1:{free_port()}", "--prompt", "x"], 210),
        (["pool", "worker", "list"], 2),
    ]
    for args, code in cases:
        r = run_clean(ctl, *args)
        assert r.returncode == code, (args, r.stderr)
        lines = r.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("llorch: "), (args, r.stderr)
        assert r.stdout == ""
    r = run_clean(ctl, "--debug", "pool", "backends", "--host", "refused")
    assert r.returncode == ConnectionRefused.exit_code
    assert r.stderr.startswith("Traceback (most recent call last):")
    assert "llorch_ctl.errors.ConnectionRefused" in r.stderr
    assert r.stderr.splitlines()[-1].startswith("llorch: connection refused by ")
