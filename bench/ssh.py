"""`llorch pool worker list --host` next to plain OpenSSH `ssh host llorch-pool worker list`.

Starts a real sshd on loopback (the same one the tests use), points both clients at it with the
same key and known_hosts, and times whole command runs, interleaved, in the same run. Prints
JSON: wall-time medians for each, their ratio (target <= 1.2), and the paramiko transport alone
(connect + run, no CLI start-up). With --model, one worker on that model is running on the
"remote" pool so the list has something to show.

    .venv/bin/python bench/ssh.py [--reps 9] [--model PATH]
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llorch_ctl.inventory import load_inventory, resolve_target  # noqa: E402
from llorch_ctl.transport import ParamikoTransport  # noqa: E402
from tests.llorch_ctl.sshd import SSHD, keygen, start_sshd, stop_sshd  # noqa: E402


def timed(fn: Callable[[], None]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def check(cmd: list[str], env: dict[str, str]) -> Callable[[], None]:
    def run() -> None:
        r = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
        if r.returncode != 0:
            raise SystemExit(f"{cmd[:4]}... exited {r.returncode}: {r.stderr.decode()[-500:]}")

    return run


def summary(xs: list[float]) -> dict[str, float]:
    return {
        "median_s": round(statistics.median(xs), 4),
        "mean_s": round(statistics.fmean(xs), 4),
        "min_s": round(min(xs), 4),
        "max_s": round(max(xs), 4),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=9)
    ap.add_argument("--model", type=Path, help="a GGUF to run one worker on (optional)")
    a = ap.parse_args()
    if not Path(SSHD).exists() or shutil.which("ssh") is None:
        print(json.dumps({"bench": "ssh", "error": "needs OpenSSH sshd and ssh"}))
        return 2
    user = getpass.getuser()
    pool_cmd = f"{shlex.quote(sys.executable)} -m pool_ctl"
    with tempfile.TemporaryDirectory(prefix="llorch-bench-ssh-") as tmp_s:
        tmp = Path(tmp_s)
        home = tmp / "pool-home"
        env = {**os.environ, "LLORCH_HOME": str(home)}
        key = keygen(tmp / "id_ed25519")
        server = start_sshd(tmp / "sshd", "127.0.0.1", key)
        try:
            kh = tmp / "known_hosts"
            kh.write_text(server.known_hosts_line())
            (tmp / "ssh_config").write_text("")
            cfg = tmp / "config.toml"
            cfg.write_text(
                f'known_hosts = "{kh}"\nssh_config = "{tmp / "ssh_config"}"\n'
                f'[pools.bench]\nhost = "127.0.0.1"\nport = {server.port}\nuser = "{user}"\n'
                f'identity_file = "{key}"\npool_cmd = {json.dumps(pool_cmd)}\n'
                f'env = {{ LLORCH_HOME = "{home}" }}\n'
            )
            workers = 0
            if a.model is not None:
                local = [sys.executable, "-m", "pool_ctl"]
                check([*local, "models", "import", str(a.model), "--id", "bench"], env)()
                check([*local, "worker", "spawn", "cpu", "--model", "bench"], env)()
                workers = 1
            llorch = check(
                [
                    sys.executable,
                    "-m",
                    "llorch_ctl",
                    "--config",
                    str(cfg),
                    "pool",
                    "worker",
                    "list",
                    "--host",
                    "bench",
                ],
                env,
            )
            remote = f"env LLORCH_HOME={shlex.quote(str(home))} {pool_cmd} worker list"
            openssh = check(
                [
                    "ssh",
                    "-o",
                    "BatchMode=yes",
                    "-o",
                    "StrictHostKeyChecking=yes",
                    "-o",
                    f"UserKnownHostsFile={kh}",
                    "-o",
                    "GlobalKnownHostsFile=/dev/null",
                    "-F",
                    "/dev/null",
                    "-i",
                    str(key),
                    "-p",
                    str(server.port),
                    f"{user}@127.0.0.1",
                    remote,
                ],
                env,
            )
            target = resolve_target(load_inventory(cfg), "bench")

            def transport_only() -> None:
                status = ParamikoTransport(target).run(
                    ["worker", "list"], lambda _b: None, lambda _b: None
                )
                if status != 0:
                    raise SystemExit(f"transport run exited {status}")

            # The remote program's own start-up, for scale.
            bare = check([*shlex.split(pool_cmd), "worker", "list"], env)
            for fn in (llorch, openssh, transport_only, bare):
                fn()  # warm caches once
            samples: dict[str, list[float]] = {
                "llorch": [],
                "openssh": [],
                "transport": [],
                "remote_cmd_local": [],
            }
            for _ in range(a.reps):
                samples["llorch"].append(timed(llorch))
                samples["openssh"].append(timed(openssh))
                samples["transport"].append(timed(transport_only))
                samples["remote_cmd_local"].append(timed(bare))
            if workers:
                check([sys.executable, "-m", "pool_ctl", "worker", "stop", "--all"], env)()
        finally:
            stop_sshd(server)
    med = {k: statistics.median(v) for k, v in samples.items()}
    print(
        json.dumps(
            {
                "bench": "ssh",
                "command": "pool worker list",
                "reps": a.reps,
                "workers_listed": workers,
                "llorch_cli": summary(samples["llorch"]),
                "openssh_cli": summary(samples["openssh"]),
                "ratio_median": round(med["llorch"] / med["openssh"], 3),
                "target_ratio": 1.2,
                "paramiko_transport_in_process": summary(samples["transport"]),
                "remote_command_run_locally": summary(samples["remote_cmd_local"]),
            },
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
