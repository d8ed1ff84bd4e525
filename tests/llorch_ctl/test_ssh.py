"""`llorch pool ...` against a real OpenSSH sshd on loopback: streaming, status, quoting, keys."""

from __future__ import annotations

import getpass
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llorch_ctl.inventory import load_inventory, resolve_target
from llorch_ctl.transport import ParamikoTransport
from tests.llorch_ctl.conftest import LLORCH, Ctl, pool_for, write_inventory
from tests.llorch_ctl.sshd import Sshd, keygen
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
    ctl = write_inventory(tmp_path, {"a": pool_for(sshd, ECHO_ARGV)})
    r = ctl.run("pool", "backends", "--host", "a")
    assert r.returncode == 206
    assert r.stdout == ""
    assert "--accept-new-host-key" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not ctl.known_hosts.exists()


def test_accept_new_host_key_saves_it_for_next_time(tmp_path: Path, sshd: Sshd) -> None:
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
    other = keygen(tmp_path / "impostor")
    kind, b64 = Path(f"{other}.pub").read_text().split()[:2]
    ctl = write_inventory(tmp_path, {"a": pool_for(sshd, ECHO_ARGV)})
    before = f"{sshd.key_name} {kind} {b64}\n"
    ctl.known_hosts.write_text(before)
    for extra in ([], ["--accept-new-host-key"]):
        r = ctl.run("pool", "worker", "list", "--host", "a", *extra)
        assert r.returncode == 207
        assert "HOST KEY CHANGED" in r.stderr
        assert r.stdout == ""
    assert ctl.known_hosts.read_text() == before


def test_auth_failure_is_its_own_error(tmp_path: Path, sshd: Sshd) -> None:
    stranger = keygen(tmp_path / "stranger")
    ctl = trusted(tmp_path, sshd, ECHO_ARGV, identity_file=str(stranger))
    r = ctl.run("pool", "worker", "list", "--host", "a")
    assert r.returncode == 205
    assert "rejected our keys" in r.stderr


def test_remote_pool_command_missing(tmp_path: Path, sshd: Sshd) -> None:
    ctl = trusted(tmp_path, sshd, "/nonexistent/bin/llorch-pool")
    r = ctl.run("pool", "worker", "list", "--host", "a")
    assert r.returncode == 127
    assert "install llorch-pool" in r.stderr.splitlines()[-1]


def test_connection_refused(tmp_path: Path, sshd: Sshd) -> None:
    pool = pool_for(sshd, ECHO_ARGV, port=free_port())
    ctl = write_inventory(tmp_path, {"a": pool})
    r = ctl.run("pool", "worker", "list", "--host", "a")
    assert r.returncode == 203
    assert "connection refused" in r.stderr


def test_name_that_does_not_resolve(tmp_path: Path, sshd: Sshd) -> None:
    ctl = write_inventory(tmp_path, {"a": pool_for(sshd, ECHO_ARGV, host="no-such-host.invalid")})
    r = ctl.run("pool", "worker", "list", "--host", "a")
    assert r.returncode == 202
    assert "no-such-host.invalid" in r.stderr


def test_unknown_pool(tmp_path: Path, sshd: Sshd) -> None:
    ctl = trusted(tmp_path, sshd, ECHO_ARGV)
    r = ctl.run("pool", "worker", "list", "--host", "nope")
    assert r.returncode == 201
    assert "known pools: a" in r.stderr


def test_silent_server_times_out(tmp_path: Path, sshd: Sshd) -> None:
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
    lister = tmp_path / "lister.py"
    lister.write_text(
        "import json, sys, time\n"
        "time.sleep(1.0)\n"
        "assert sys.argv[1:] == ['worker', 'list', '--json'], sys.argv\n"
        "print(json.dumps([{'id': 'w1', 'model': 'tiny', 'port': 8001, 'status': 'ready'}]))\n"
    )
    cmd = f"{PY} {shlex.quote(str(lister))}"
    pools = {
        "east": pool_for(sshd, cmd),
        "west": pool_for(sshd, cmd),
        "down": pool_for(sshd, cmd, port=free_port()),
    }
    ctl = write_inventory(tmp_path, pools)
    ctl.known_hosts.write_text(sshd.known_hosts_line())
    r = ctl.run("pool", "status")
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["POOL", "ADDRESS", "STATE", "WORKERS", "DETAIL"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {"east", "west", "down"}
    for name in ("east", "west"):
        assert rows[name].split()[2:5] == ["ok", "1", "w1:tiny@8001(ready)"]
    assert "connection refused" in rows["down"]
    j = ctl.run("pool", "status", "--json", "--host", "east", "--host", "west")
    assert j.returncode == 0, j.stderr
    assert [p["pool"] for p in json.loads(j.stdout)] == ["east", "west"]


def test_ctrl_c_closes_the_session_with_one_line(tmp_path: Path, sshd: Sshd) -> None:
    ctl = trusted(tmp_path, sshd, "echo started; sleep 30; echo")
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


def test_ssh_config_proxy_command_is_used(tmp_path: Path, sshd: Sshd) -> None:
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


def test_ssh_agent_keys_are_used(tmp_path: Path, sshd: Sshd) -> None:
    require(shutil.which("ssh-agent") is not None, "ssh-agent is not installed")
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if sock.exists():
                break
            time.sleep(0.05)
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
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_remote_killed_by_a_signal_has_no_exit_status(tmp_path: Path, sshd: Sshd) -> None:
    ctl = trusted(tmp_path, sshd, "sh -c 'echo partial; kill -KILL $$'")
    r = ctl.run("pool", "worker", "list", "--host", "a")
    assert r.returncode == 209
    assert r.stdout == "partial\n"
    assert "without an exit status" in r.stderr
