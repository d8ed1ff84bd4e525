"""`llorch limits set|get` and `llorch usage` against a real orchestratord and worker
(CTL-080..CTL-082)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.llorch_ctl.conftest import LLORCH
from tests.orchestratord.cluster import AT, MODEL, orchestratord, worker
from tests.support import Proc

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def orch(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Proc]:
    tmp = tmp_path_factory.mktemp("limits")
    keys = ("--api-key", "acme:k-acme", "--api-key", "beta:k-beta")
    with orchestratord(tmp, *keys) as p, worker(tiny_model, tmp, p.url, "w-1"):
        yield p


def llorch(orch: Proc, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LLORCH_ORCHESTRATOR_URL": orch.url}
    env.pop("LLORCH_API_KEY", None)
    env["LLORCH_ADMIN_TOKEN" if key is None else "LLORCH_API_KEY"] = key or AT
    return subprocess.run(
        [*LLORCH, "--config", os.devnull, *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_ctl_080_limits_set_changes_only_what_is_given_and_get_shows_them(orch: Proc) -> None:
    """CTL-080: `llorch limits set` changes the limits given and keeps the others; `none`
    removes one; `llorch limits get` prints them (a table, or --json)."""
    r = llorch(orch, "limits", "set", "acme", "--rpm", "50", "--daily-tokens", "100000")
    assert r.returncode == 0, r.stderr
    assert "rpm" in r.stdout and "50" in r.stdout and "100000" in r.stdout
    r = llorch(orch, "limits", "set", "acme", "--concurrency", "3", "--rpm", "none", "--json")
    assert r.returncode == 0, r.stderr
    limits = json.loads(r.stdout)["limits"]
    assert (limits["concurrency"], limits["rpm"], limits["daily_tokens"]) == (3, None, 100000)
    r = llorch(orch, "limits", "get", "acme", "--json")
    assert json.loads(r.stdout)["limits"] == limits
    table = llorch(orch, "limits", "get", "acme").stdout
    assert table.splitlines()[0] == "tenant acme"
    assert table.splitlines()[2].split()[:2] == ["concurrency", "3"]


def test_ctl_081_bad_values_and_refusals_are_one_line(orch: Proc) -> None:
    """CTL-081: a bad value is a usage error (exit 2), a client key on the admin route one
    line from orchestratord, each on one line."""
    r = llorch(orch, "limits", "set", "acme", "--rpm", "-3")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--rpm" in r.stderr
    r = llorch(orch, "limits", "get", "acme", "--admin-token", "k-acme")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = llorch(orch, "usage", "--by", "day")
    assert r.returncode == 2 and "--by" in r.stderr


def test_ctl_082_usage_as_a_table_and_json_each_key_its_own(orch: Proc) -> None:
    """CTL-082: `llorch usage --since 24h --by tenant|model` prints the totals as a table or
    JSON; a client key sees only its tenant."""
    for key in ("k-acme", "k-beta"):
        body = {"model": MODEL, "prompt": "hi", "max_tokens": 3, "ignore_eos": True}
        with httpx.stream(
            "POST",
            orch.url + "/v2/tasks",
            json=body,
            headers={"authorization": f"Bearer {key}", "accept": "text/event-stream"},
            timeout=60,
        ) as s:
            assert s.status_code == 200
            s.read()
    r = llorch(orch, "usage", "--since", "24h", "--by", "tenant", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["tenant"]: row for row in json.loads(r.stdout)["usage"]}
    assert {"acme", "beta"} <= set(rows) and rows["acme"]["completion_tokens"] >= 3
    table = llorch(orch, "usage", "--by", "model").stdout.splitlines()
    assert table[0].split() == [
        "MODEL",
        "TASKS",
        "ERRORS",
        "PROMPT",
        "CACHED",
        "COMPLETION",
        "TOTAL",
    ]
    assert table[1].split()[0] == MODEL
    own = llorch(orch, "usage", "--json", key="k-beta")
    assert [row["tenant"] for row in json.loads(own.stdout)["usage"]] == ["beta"]
