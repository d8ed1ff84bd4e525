# TEMPORARY harness (to be deleted): the schemathesis test against an external cluster.
from __future__ import annotations
import os
from typing import Any
import schemathesis
from hypothesis import HealthCheck, settings
from tests.orchestratord.test_schemathesis import CHECKS, schema, tame, token_for

URL = os.environ.get("ST_URL", "")

@schema.parametrize()
@settings(max_examples=int(os.environ.get("ST_N", "20")), deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
def test_ext(case: schemathesis.Case[Any]) -> None:
    tame(case.body)
    case.call_and_validate(base_url=URL, checks=CHECKS, timeout=20,
        headers={"Authorization": f"Bearer {token_for(case.path)}"})
