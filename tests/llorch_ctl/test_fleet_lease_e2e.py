"""`llorch fleet apply`'s lease against a real orchestratord on loopback: a conflict and a
vanished action are told from other refusals by status and problem code (CTL-111)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import httpx
import pytest

from llorch_ctl.errors import ApiFailed
from llorch_ctl.fleet import FleetApi
from tests.orchestratord.cluster import AT, orchestratord

pytestmark = pytest.mark.e2e

# A pool may be called anything a pool name allows: here, the word a conflict's code is.
FLEET = {
    "models": {"m": {"source": "catalog:m", "pools": ["CONFLICT"], "slots": 1}},
    "scaling": {"target_ttft_ms": 1000, "cooldown_s": 30},
}


def test_ctl_111_a_lease_is_classified_by_status_and_code_not_by_text(tmp_path: Path) -> None:
    """CTL-111, FLT-026: another holder's lease (409 CONFLICT) and an action the plan does not
    list (404 NOT_FOUND) are "not ours" (False); a refusal of another kind (400 here) is
    raised with its status and code, though the action's id, and so the message, holds the
    text CONFLICT (matched on text, it was taken for a conflict and the action silently
    skipped)."""
    with orchestratord(tmp_path) as orch, contextlib.closing(FleetApi(orch.url, AT)) as api:
        assert api.put_fleet(FLEET)["models"]["m"]["pools"] == ["CONFLICT"]
        ids = [a["id"] for a in api.plan()["actions"]]
        assert ids == ["ensure_model:m@CONFLICT", "spawn:m.CONFLICT.0"]
        with pytest.raises(ApiFailed) as refused:
            api.lease("ensure_model:m@CONFLICT", "")  # an empty holder: 400
        assert (refused.value.status, refused.value.code) == (400, "INVALID_PARAMS")
        assert "CONFLICT" in refused.value.message
        # The refused lease took nothing: the action is still free for a real holder.
        assert api.lease("ensure_model:m@CONFLICT", "apply-a") is True
        assert api.lease("ensure_model:m@CONFLICT", "apply-b") is False  # 409 CONFLICT
        assert api.lease("spawn:m.NOT_FOUND.9", "apply-b") is False  # 404 NOT_FOUND
        bad = FleetApi(orch.url, "not-the-admin-token")
        with contextlib.closing(bad), pytest.raises(ApiFailed) as denied:
            bad.lease("ensure_model:m@CONFLICT", "apply-c")
        assert (denied.value.status, denied.value.code) == (401, "UNAUTHORIZED")
        assert httpx.get(orch.url + "/health").status_code == 200
