"""The fleet's admin endpoints on a real orchestratord on loopback (ORCH-306, ORCH-410)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.orchestratord.cluster import AT, orchestratord, wait_for

pytestmark = pytest.mark.e2e

ADMIN = {"authorization": f"Bearer {AT}"}


def audit_entries(url: str, action: str) -> list[dict[str, Any]]:
    r = httpx.get(url + "/v2/admin/audit", params={"action": action}, headers=ADMIN)
    assert r.status_code == 200, r.text
    return list(r.json()["entries"])


def test_orch_410_a_pool_report_is_audited_with_before_and_after(tmp_path: Path) -> None:
    """ORCH-410, ORCH-306: each PUT /v2/fleet/pools/{pool} leaves a `fleet.pool` entry naming
    the admin credential and the pool, with the report in use before (none at first) and the
    new one; a refused report records nothing."""
    first = {"ram_total_bytes": 8 << 30, "ram_free_bytes": 6 << 30,
             "models": {"m": {"size_bytes": 1 << 20}}}  # fmt: skip
    second = {"ram_total_bytes": 8 << 30, "ram_free_bytes": 2 << 30, "vram_total_bytes": 4 << 30,
              "vram_free_bytes": 1 << 30, "models": {}}  # fmt: skip
    with orchestratord(tmp_path) as orch:
        url = orch.url + "/v2/fleet/pools/p1"
        assert httpx.put(url, json=first, headers=ADMIN).status_code == 204
        assert httpx.put(url, json=second, headers=ADMIN).status_code == 204
        bad = httpx.put(url, json={"ram_free_bytes": -1}, headers=ADMIN)
        assert bad.status_code == 400
        # The trail is written in the background: wait for both entries.
        got = wait_for(
            lambda: (e := audit_entries(orch.url, "fleet.pool")) and len(e) >= 2 and e,
            what="two fleet.pool audit entries",
        )
    assert [(e["who"], e["action"], e["target"]) for e in got] == [
        ("admin", "fleet.pool", "p1"),
        ("admin", "fleet.pool", "p1"),
    ]
    newest, oldest = got
    assert oldest["before"] is None
    assert oldest["after"]["ram_free_bytes"] == 6 << 30
    assert oldest["after"]["models"]["m"]["size_bytes"] == 1 << 20
    assert newest["before"] == oldest["after"]
    assert (newest["after"]["ram_free_bytes"], newest["after"]["vram_free_bytes"]) == (
        2 << 30,
        1 << 30,
    )
    assert newest["after"]["models"] == {}
