"""docs/deploy.md followed step by step where a sandbox can: its `llorch` commands, in order,
against two pool hosts in network namespaces (own address, own sshd) and a real orchestratord.

What the sandbox has no stand-in for is replaced, and only that: the pool hosts are `h1` and
`h2` at their namespace addresses (the guide's `pool1`, `pool2` and `--host 0.0.0.0`), the
model comes from a local file named like the guide's (no Hugging Face hub), orchestratord is
plain HTTP on a namespace link (no TLS proxy) and runs without systemd.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.llorch_ctl.conftest import pool_for, toml_str, two_pool_hosts, write_inventory
from tests.llorch_ctl.test_whole_flow import API_KEY, CLUSTER, POOL_CMD, orchestratord

pytestmark = [pytest.mark.e2e, pytest.mark.ssh, pytest.mark.netns]

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "deploy.md"


def guide_commands() -> list[list[str]]:
    """The `llorch ...` lines of the guide's walk-through (its ```sh blocks before "Day two":
    the sections after it show commands on a running fleet's own ids), in order, as argv."""
    text = GUIDE.read_text().split("\n## 8. Day two")[0]
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [
        shlex.split(line, comments=True)
        for b in blocks
        for line in b.splitlines()
        if line.startswith("llorch ")
    ]


def test_the_guide_names_each_step() -> None:
    """OPS-003: the guide covers inventory, tokens, model download, spawn, the TLS proxy
    and a streamed task, with the names of the glossary."""
    text = GUIDE.read_text()
    for words in (
        "[orchestrator]",
        "cluster_token",
        "admin_token",
        "proxy_buffering off",
        "models download",
        "worker spawn",
        "llorch infer",
        "systemd",
    ):
        assert words in text, words
    assert "../shared" not in text and "--token " not in text and "--orch-url" not in text
    steps = [" ".join(argv[:3]) for argv in guide_commands()]
    assert "\n## 8. Day two" in text
    assert steps[0].startswith("llorch pool backends")
    spawn = next(i for i, s in enumerate(steps) if s.startswith("llorch pool worker"))
    infer = next(i for i, s in enumerate(steps) if s.startswith("llorch infer"))
    assert spawn < infer


@pytest.fixture
def hosts(tmp_path: Path, client_key: Path) -> Iterator[tuple[Path, str, dict[str, str]]]:
    """Two namespaced pool hosts with sshd, orchestratord, and the guide's inventory for them:
    (inventory, orchestrator URL, pool name -> address)."""
    with contextlib.ExitStack() as stack:
        two = two_pool_hosts(stack, tmp_path, client_key)
        nets, sshds, orch_addr = two.hosts, two.sshds, two.orch_addr
        orch_url = stack.enter_context(orchestratord(orch_addr, tmp_path))
        # The guide's step 4: the pools' env carries the cluster token and the URL.
        pools = {
            name: pool_for(
                sshds[name],
                POOL_CMD,
                env={
                    "LLORCH_HOME": str(tmp_path / f"home-{name}"),
                    "LLORCH_CLUSTER_TOKEN": CLUSTER,
                    "LLORCH_ORCHESTRATOR_URL": orch_url,
                },
            )
            for name in nets
        }
        orchestrator = (
            f"[orchestrator]\nurl = {toml_str(orch_url)}\napi_key = {toml_str(API_KEY)}\n"
            f"cluster_token = {toml_str(CLUSTER)}\nadmin_token = {toml_str(CLUSTER)}\n"
        )
        ctl = write_inventory(tmp_path, pools, extra=orchestrator)
        ctl.known_hosts.write_text("".join(s.known_hosts_line() for s in sshds.values()))
        yield ctl.config, orch_url, {name: h.addr for name, h in nets.items()}


def llorch(config: Path, args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llorch_ctl", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=240,
        env={k: v for k, v in os.environ.items() if not k.startswith("LLORCH_")},
    )


def test_following_the_guide_streams_a_task(
    hosts: tuple[Path, str, dict[str, str]], tiny_model: Path, tmp_path: Path
) -> None:
    """OPS-003: every `llorch` command of docs/deploy.md, in order, succeeds; the workers
    register; the task streams text."""
    config, _, addrs = hosts
    commands = guide_commands()
    model_file = None
    for argv in commands:
        assert argv[0] == "llorch"
        args = argv[1:]
        # The guide's pools are pool1 and pool2; here they are h1 and h2.
        pool = next((f"h{a[-1]}" for a in args if re.fullmatch(r"pool[12]", a)), None)
        args = [f"h{a[-1]}" if re.fullmatch(r"pool[12]", a) else a for a in args]
        if args[:3] == ["pool", "models", "download"]:
            # No hub here: the same file name, imported, gets the guide's catalog id.
            model_id = args[-1].split(":")[-1]  # q4_k_m
            model_file = tmp_path / f"qwen2.5-0.5b-instruct-{model_id}.gguf"
            shutil.copyfile(tiny_model, model_file)
            args = ["pool", "models", "import", "--host", args[4], str(model_file)]
        if "0.0.0.0" in args:
            assert pool is not None
            args[args.index("0.0.0.0")] = addrs[pool]
        r = llorch(config, args)
        if args[0] == "workers":
            # Workers register just after they are ready: a reader would look again.
            deadline = time.monotonic() + 30
            while len(r.stdout.splitlines()) < 3 and time.monotonic() < deadline:
                time.sleep(0.2)
                r = llorch(config, args)
            assert len({line.split()[0] for line in r.stdout.splitlines()[1:]}) == 2, r.stdout
        assert r.returncode == 0, (args, r.stdout, r.stderr)
        if args[0] == "infer":
            assert r.stdout.strip(), "the task streamed no text"
    assert model_file is not None
