"""The console's Usage page in a real headless Chromium against a real orchestratord and
workers (ORCH-329): the admin sees every tenant's totals, as GET /v2/usage gives them; a client
key its own tenant's only; the next user in the tab sees nothing of the last one's (ORCH-228)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.browser.harness import LAPTOP, PHONE, browser, require_browser, shot
from tests.browser.test_console_e2e import EVERYTHING, sign_in, submit
from tests.orchestratord.cluster import MODEL, wait_for
from tests.orchestratord.fleet_cluster import ADMIN, KEY_ACME, KEY_OTHER, Fleet, bearer, run_fleet

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def fleet(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require_browser()
    with run_fleet(tiny_model, tmp_path_factory.mktemp("usage")) as f:
        yield f


def test_orch_329_usage_page_shows_each_tenant_its_own_and_forgets_on_sign_out(
    fleet: Fleet, tmp_path: Path
) -> None:
    """ORCH-329: the admin's Usage page lists acme and other with the totals of
    GET /v2/usage, and by model; after sign-out, tenant other in the same tab sees its own row
    only, with the filters back to their defaults, and no trace of acme anywhere (ORCH-228)."""
    tasks = [
        submit(fleet.url, KEY_ACME, prompt="acme one", max_tokens=5, ignore_eos=True),
        submit(fleet.url, KEY_ACME, prompt="acme two", max_tokens=7, ignore_eos=True),
        submit(fleet.url, KEY_OTHER, prompt="other", max_tokens=3, ignore_eos=True),
    ]
    for task in tasks:
        wait_for(
            lambda t=task: httpx.get(f"{fleet.url}/v2/tasks/{t}", headers=bearer(ADMIN)).json()[
                "finished_ms"
            ],
            what="the task to finish",
        )
    totals = {
        r["tenant"]: r["total_tokens"]
        for r in httpx.get(f"{fleet.url}/v2/usage", headers=bearer(ADMIN)).json()["usage"]
    }
    with browser(tmp_path / "profile", viewport=LAPTOP) as ctx:
        page = ctx.new_page()
        errors = sign_in(page, fleet.url, ADMIN)
        page.goto(f"{fleet.url}/ui/#/usage")
        for tenant in ("acme", "other"):
            row = page.get_by_test_id(f"usage-{tenant}")
            row.wait_for()
            assert row.get_by_test_id("usage-total").inner_text() == str(totals[tenant])
        shot(page, "usage-admin-laptop-light")
        page.get_by_test_id("usage-by").select_option("model")
        page.get_by_test_id(f"usage-{MODEL}").wait_for()
        page.get_by_test_id("usage-acme").wait_for(state="detached")

        page.locator("#signout").click()
        sign_in(page, fleet.url, KEY_OTHER)
        page.goto(f"{fleet.url}/ui/#/usage")
        page.get_by_test_id("usage-other").wait_for()
        assert page.get_by_test_id("usage-by").input_value() == "tenant"
        assert page.locator("#usage-rows tr").count() == 1
        assert "acme" not in page.evaluate(EVERYTHING)
        assert errors == []
    with browser(tmp_path / "phone", viewport=PHONE, dark=True) as ctx:
        page = ctx.new_page()
        sign_in(page, fleet.url, KEY_ACME)
        page.goto(f"{fleet.url}/ui/#/usage")
        page.get_by_test_id("usage-acme").wait_for()
        shot(page, "usage-client-phone-dark")
