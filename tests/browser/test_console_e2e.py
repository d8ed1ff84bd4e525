"""The web console in a real headless Chromium against a real orchestratord and real workers
(ORCH-220..227): the fleet page follows the workers, a task's tokens stream into its page, a
compare run over two workers ends with figures and in the history, a client key sees only its
tenant; every page is usable at both widths in light and dark (ORCH-226). Each page is saved as
a screenshot (laptop and phone width, light and dark), taken by Debian's chromium through
tests/browser/harness.py (ORCH-227)."""

from __future__ import annotations

import contextlib
import json
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.browser.harness import LAPTOP, PHONE, browser, require_browser, shot
from tests.orchestratord.cluster import MODEL, wait_for, worker
from tests.orchestratord.fleet_cluster import (
    ADMIN,
    KEY_ACME,
    KEY_OTHER,
    Fleet,
    bearer,
    run_fleet,
)

if TYPE_CHECKING:
    from playwright.sync_api import Page

pytestmark = pytest.mark.e2e
LONG = {"prompt": "Tell me everything", "max_tokens": 16000, "ignore_eos": True}


@pytest.fixture(scope="module")
def fleet(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    require_browser()
    with run_fleet(tiny_model, tmp_path_factory.mktemp("console")) as f:
        yield f


def sign_in(page: Page, url: str, token: str) -> list[str]:
    """Open the console, sign in, wait for the live feed; returns the page's errors so far
    (and collects later ones into the same list)."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/")
    page.get_by_test_id("token").fill(token)
    page.get_by_test_id("signin").click()
    page.locator("#live.on").wait_for()
    return errors


def submit(url: str, key: str, **body: Any) -> str:
    r = httpx.post(url + "/v2/tasks", json={"model": MODEL, **body}, headers=bearer(key))
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


@pytest.mark.parametrize(
    ("name", "viewport", "dark"), [("laptop", LAPTOP, False), ("phone", PHONE, True)]
)
def test_orch_222_fleet_page_lists_the_workers_and_follows_a_kill(
    fleet: Fleet, tmp_path: Path, name: str, viewport: dict[str, int], dark: bool
) -> None:
    """ORCH-222: fleet page lists the workers and follows a kill."""
    with browser(tmp_path / "profile", viewport=viewport, dark=dark) as ctx:
        page = ctx.new_page()
        errors = sign_in(page, fleet.url, ADMIN)
        for wid in ("w1", "w2"):
            page.get_by_test_id(f"worker-{wid}").wait_for()
        assert page.get_by_test_id("pool-host-a").get_by_test_id("worker-w1").count() == 1
        assert page.get_by_test_id("pool-host-b").get_by_test_id("worker-w2").count() == 1
        assert page.get_by_test_id("who").text_content() == "admin"
        with worker(
            fleet.model, fleet.tmp, fleet.url, f"w-{name}", extra=["--pool", "host-c"]
        ) as w:
            row = page.get_by_test_id(f"worker-w-{name}")
            row.wait_for()  # a new worker appears without a reload
            assert row.get_attribute("data-state") == "ready"
            w.kill(signal.SIGKILL)
            page.wait_for_function(
                "id => ['stale', 'dead'].includes("
                "document.querySelector(`[data-testid=worker-${id}]`)?.dataset.state)",
                arg=f"w-{name}",
            )
            assert "policy" in page.get_by_test_id("card-policy").inner_text().lower()
            shot(page, f"fleet-{name}-{'dark' if dark else 'light'}")
        assert errors == []


@contextlib.contextmanager
def long_task_page(page: Page, url: str) -> Iterator[str]:
    """Submit a task that runs until cancelled and open its page; inside, it runs on a worker.
    On the way out the task is cancelled and its page has taken in the end of the stream."""
    task_id = submit(url, KEY_ACME, **LONG)
    try:
        page.goto(f"{url}/ui/#/task/{task_id}")
        page.wait_for_function(
            "() => document.querySelector('[data-testid=task-state]').textContent"
            ".startsWith('running on')"
        )
        yield task_id
    finally:
        httpx.post(f"{url}/v2/tasks/{task_id}/cancel", headers=bearer(KEY_ACME))
    page.wait_for_selector("[data-testid=task-text][data-done='1']")


def test_orch_223_a_tasks_tokens_appear_as_they_stream_and_replay(
    fleet: Fleet, tmp_path: Path
) -> None:
    """ORCH-223: a task's tokens appear as they stream and replay."""
    with browser(tmp_path / "profile", viewport=LAPTOP) as ctx:
        page = ctx.new_page()
        errors = sign_in(page, fleet.url, ADMIN)
        with long_task_page(page, fleet.url):
            # Text on the page while the task still runs: the tokens arrive as they stream.
            page.wait_for_function(
                "() => document.querySelector('[data-testid=task-text]').textContent.length > 0"
            )
            first = len(page.get_by_test_id("task-text").text_content() or "")
            page.wait_for_function(
                "n => document.querySelector('[data-testid=task-text]').textContent.length > n",
                arg=first,
            )
            shot(page, "task-streaming-laptop-light")
        assert page.get_by_test_id("task-state").inner_text().startswith("ended: CANCELLED")

        # The next task shown starts afresh: its text is not marked done while it runs.
        with long_task_page(page, fleet.url):
            assert page.get_by_test_id("task-text").get_attribute("data-done") is None

        # ignore_eos: the tiny model samples EOS at random, and the page must show all 24 tokens.
        short = submit(fleet.url, KEY_ACME, prompt="short one", max_tokens=24, ignore_eos=True)
        wait_for(
            lambda: httpx.get(f"{fleet.url}/v2/tasks/{short}", headers=bearer(ADMIN)).json()[
                "finished_ms"
            ],
            what="the short task to finish",
        )
        with httpx.stream(
            "GET", f"{fleet.url}/v2/tasks/{short}/events", headers=bearer(ADMIN)
        ) as r:
            text = "".join(
                json.loads(line[6:]).get("t", "")
                for line in r.iter_lines()
                if line.startswith("data: ") and '"t"' in line
            )
        page.goto(f"{fleet.url}/ui/#/task/{short}")
        page.wait_for_selector("[data-testid=task-text][data-done='1']")
        assert page.get_by_test_id("task-text").text_content() == text
        page.get_by_role("button", name="Replay").click()
        page.wait_for_function(
            "t => document.querySelector('[data-testid=task-text]').textContent === t"
            " && !document.querySelector('#replay').disabled",
            arg=text,
        )
        assert page.get_by_test_id("tc-tokens").inner_text().endswith("24")
        shot(page, "task-replayed-laptop-light")
        assert errors == []


def test_orch_404_the_task_page_shows_predicted_and_actual_cached_tokens(
    fleet: Fleet, tmp_path: Path
) -> None:
    """ORCH-404: a task placed by the cache index shows, on its page, the cached tokens the
    index predicted and those its worker reused."""
    prefix = "The archivist keeps every ledger of the old harbour town. " * 12
    first = submit(fleet.url, KEY_ACME, prompt=prefix + "One?", max_tokens=2)

    def entries() -> float:
        text = httpx.get(fleet.url + "/metrics").text
        line = next(ln for ln in text.splitlines() if 'cache_index{figure="entries"}' in ln)
        return float(line.split()[-1])

    wait_for(
        lambda: (
            httpx.get(f"{fleet.url}/v2/tasks/{first}", headers=bearer(ADMIN)).json()["finished_ms"]
            and entries() > 0
        ),
        what="the first task's blocks in the index",
    )
    second = submit(fleet.url, KEY_ACME, prompt=prefix + "Two?", max_tokens=2)
    with browser(tmp_path / "profile", viewport=LAPTOP) as ctx:
        page = ctx.new_page()
        errors = sign_in(page, fleet.url, ADMIN)
        page.goto(f"{fleet.url}/ui/#/task/{second}")
        page.wait_for_selector("[data-testid=task-text][data-done='1']")
        predicted, actual = page.get_by_test_id("tc-cached").inner_text().split()[-3::2]
        assert int(predicted.replace(",", "")) > 0
        assert int(actual.replace(",", "")) >= int(predicted.replace(",", ""))
        assert errors == []


@pytest.mark.parametrize(
    ("name", "viewport", "dark"), [("laptop", LAPTOP, False), ("phone", PHONE, True)]
)
def test_orch_224_a_compare_run_over_two_workers_ends_with_figures_and_in_history(
    fleet: Fleet, tmp_path: Path, name: str, viewport: dict[str, int], dark: bool
) -> None:
    """ORCH-224: a compare run over two workers ends with figures and in history."""
    with browser(tmp_path / "profile", viewport=viewport, dark=dark) as ctx:
        page = ctx.new_page()
        errors = sign_in(page, fleet.url, KEY_ACME)
        page.goto(f"{fleet.url}/ui/#/compare")
        page.get_by_test_id("cmp-model").select_option(MODEL)
        page.locator("#cmp-targets input[value='worker:w1']").check()
        page.locator("#cmp-targets input[value='worker:w2']").check()
        page.get_by_test_id("cmp-prompt").fill(f"Compare on the {name}")
        page.get_by_test_id("cmp-run").click()
        lanes = page.get_by_test_id("lane")
        page.wait_for_selector("[data-testid=lane][data-done='1'] >> nth=1")
        assert lanes.count() == 2
        for i, target in enumerate(("worker:w1", "worker:w2")):
            lane = lanes.nth(i)
            assert lane.get_attribute("data-target") == target
            assert lane.get_by_test_id("lane-status").inner_text() == "done"
            for fig in ("ttft", "total", "tokens"):
                assert lane.get_by_test_id(fig).inner_text() not in ("–", "", "0"), fig
        run_id = page.get_by_test_id("cmp-lanes").get_attribute("data-run")
        row = page.get_by_test_id(f"run-{run_id}")
        row.wait_for()
        assert row.get_attribute("data-status") == "done"
        assert "worker:w1" in row.inner_text() and "worker:w2" in row.inner_text()
        saved = httpx.get(f"{fleet.url}/v2/compare/{run_id}", headers=bearer(KEY_ACME)).json()
        assert [r["worker_id"] for r in saved["results"]] == ["w1", "w2"]
        with page.expect_download() as download:
            row.get_by_role("button", name="Export JSON").click()
        exported = Path(download.value.path()).read_text()
        assert json.loads(exported)["id"] == run_id
        shot(page, f"compare-{name}-{'dark' if dark else 'light'}")
        assert errors == []


def test_orch_225_a_client_key_sees_only_its_tenants_tasks(fleet: Fleet, tmp_path: Path) -> None:
    """ORCH-225: a client key sees only its tenant's tasks."""
    with browser(tmp_path / "profile", viewport=PHONE, dark=True) as ctx:
        page = ctx.new_page()
        errors = sign_in(page, fleet.url, KEY_OTHER)
        page.goto(f"{fleet.url}/ui/#/tasks")
        theirs = submit(fleet.url, KEY_ACME, prompt="acme's secret", max_tokens=8)
        mine = submit(fleet.url, KEY_OTHER, prompt="mine", max_tokens=8)
        page.get_by_test_id(f"task-{mine}").wait_for()
        wait_for(
            lambda: httpx.get(f"{fleet.url}/v2/tasks/{theirs}", headers=bearer(ADMIN)).json()[
                "finished_ms"
            ],
            what="acme's task to finish",
        )
        # acme's task ended before this snapshot: its events would have arrived by now.
        page.wait_for_function("() => document.querySelector(`[data-testid^=task-]`) !== null")
        assert page.get_by_test_id(f"task-{theirs}").count() == 0
        assert page.evaluate("document.body.classList.contains('admin')") is False
        assert page.locator(".admin-only").first.is_hidden()
        shot(page, "tasks-client-phone-dark")
        # A reload lists from GET /v2/tasks (tenant-scoped), and another tenant's task opened
        # by its id is not there for this key.
        page.reload()
        page.get_by_test_id(f"task-{mine}").wait_for()
        assert page.get_by_test_id(f"task-{theirs}").count() == 0
        page.goto(f"{fleet.url}/ui/#/task/{theirs}")
        page.get_by_text("No such task (or not yours).").wait_for()
        assert "acme" not in (page.get_by_test_id("task-text").text_content() or "")
        assert errors == []
    with browser(tmp_path / "admin", viewport=LAPTOP) as ctx:
        page = ctx.new_page()
        sign_in(page, fleet.url, ADMIN)
        page.goto(f"{fleet.url}/ui/#/tasks")
        again = submit(fleet.url, KEY_ACME, prompt="seen by the admin", max_tokens=8)
        page.get_by_test_id(f"task-{again}").wait_for()
        shot(page, "tasks-admin-laptop-light")


# Everything the console holds as text: the document (hidden pages, attributes and test ids
# included) and the current value of every form control, which the markup does not show.
EVERYTHING = r"""() => document.documentElement.outerHTML + "\n" +
  [...document.querySelectorAll("input, textarea, select")].map((e) => e.value).join("\n")"""


def kept(page: Page, chart: str, points: int = 1) -> tuple[int, int]:
    """The times (server ms) of the oldest and newest points a fleet chart keeps, once it keeps
    `points` snapshots or more (one a second)."""
    page.wait_for_function(
        "([id, n]) => { const s = document.querySelector(`#${id} svg`)?.dataset;"
        " return s && s.since !== '' && (n < 2 || Number(s.until) > Number(s.since)); }",
        arg=[chart, points],
    )
    svg = page.locator(f"#{chart} svg")
    return int(svg.get_attribute("data-since") or 0), int(svg.get_attribute("data-until") or 0)


def test_orch_228_the_next_user_in_the_tab_sees_nothing_of_the_previous_session(
    fleet: Fleet, tmp_path: Path
) -> None:
    """ORCH-228: the admin lists tenant acme's tasks (filtered by tenant), watches the fleet log
    and charts, runs a compare and opens acme's task; after sign-out, tenant other signs in in
    the same tab: no row, card, lane, chart point, log line or form value of the admin's session
    is left anywhere in the DOM, on the task page, Tasks, Compare or Fleet."""
    mark = uuid.uuid4().hex[:8]
    acme = submit(fleet.url, KEY_ACME, prompt="acme's own", max_tokens=8)
    mine = submit(fleet.url, KEY_OTHER, prompt="other's own", max_tokens=8)
    for task in (acme, mine):
        wait_for(
            lambda t=task: httpx.get(f"{fleet.url}/v2/tasks/{t}", headers=bearer(ADMIN)).json()[
                "finished_ms"
            ],
            what="the task to finish",
        )
    with browser(tmp_path / "profile", viewport=LAPTOP) as ctx:
        page = ctx.new_page()
        errors = sign_in(page, fleet.url, ADMIN)

        page.goto(f"{fleet.url}/ui/#/tasks")
        page.locator("#task-filters input[name=tenant]").fill("acme")
        page.get_by_test_id(f"task-{acme}").wait_for()
        page.get_by_test_id(f"task-{mine}").wait_for(state="detached")

        page.goto(f"{fleet.url}/ui/#/fleet")
        gone = f"w-gone-{mark}"
        with worker(fleet.model, fleet.tmp, fleet.url, gone, extra=["--pool", f"host-{mark}"]):
            page.get_by_test_id(f"worker-{gone}").wait_for()
        page.get_by_test_id(f"worker-{gone}").wait_for(state="detached")  # it deregistered
        assert gone in page.locator("#fleet-log").inner_text()
        # Two snapshots or more: the oldest kept is older than the newest.
        _, admins_newest = kept(page, "chart-ttft", points=2)

        page.goto(f"{fleet.url}/ui/#/compare")
        page.get_by_test_id("cmp-model").select_option(MODEL)
        page.locator("#cmp-targets input[value='worker:w1']").check()
        page.locator("#cmp-targets input[value='worker:w2']").check()
        page.get_by_test_id("cmp-prompt").fill(f"the admin's prompt {mark}")
        page.locator("#compare-form input[name=label]").fill(f"admin-label-{mark}")
        page.get_by_test_id("cmp-run").click()
        page.wait_for_selector("[data-testid=lane][data-done='1'] >> nth=1")
        run_id = page.get_by_test_id("cmp-lanes").get_attribute("data-run") or ""
        page.get_by_test_id(f"run-{run_id}").wait_for()

        page.goto(f"{fleet.url}/ui/#/task/{acme}")
        page.wait_for_selector("[data-testid=task-text][data-done='1']")
        assert page.get_by_test_id("tc-id").inner_text().endswith(acme[:16])

        secrets = {
            "acme's task": acme[:12],
            "the tenant filter or column": "acme",
            "the compare prompt": f"prompt {mark}",
            "the compare label": f"admin-label-{mark}",
            "the compare run": run_id[:10],
            "the fleet log": gone,
        }
        before = page.evaluate(EVERYTHING)
        assert all(s in before for s in secrets.values()), secrets  # all were on show

        page.locator("#signout").click()
        page.get_by_test_id("token").fill(KEY_OTHER)
        page.get_by_test_id("signin").click()
        page.locator("#live.on").wait_for()
        assert page.get_by_test_id("who").inner_text() == "tenant other"

        def nothing_left(where: str) -> None:
            everything = page.evaluate(EVERYTHING)
            left = [what for what, s in secrets.items() if s in everything]
            assert left == [], f"{where}: still in the DOM: {left}"

        # The hash still names acme's task: other gets no record, and no card of it either.
        page.get_by_text("No such task (or not yours).").wait_for()
        assert page.locator("#task-cards > *").count() == 0
        assert page.get_by_test_id("task-text").text_content() == ""
        nothing_left("the task page")

        page.goto(f"{fleet.url}/ui/#/tasks")
        page.get_by_test_id(f"task-{mine}").wait_for()
        assert page.locator("#task-filters input[name=tenant]").input_value() == ""
        nothing_left("Tasks")

        page.goto(f"{fleet.url}/ui/#/compare")
        page.locator("#cmp-targets input[value='worker:w1']").wait_for()
        assert page.locator("[data-testid=lane]").count() == 0
        assert page.get_by_test_id("cmp-lanes").get_attribute("data-run") is None
        nothing_left("Compare")

        page.goto(f"{fleet.url}/ui/#/fleet")
        page.get_by_test_id("worker-w1").wait_for()
        # The charts start with this session's first snapshot (the feed's latest when it
        # connected): none older is kept from the admin's.
        for chart in ("chart-ttft", "chart-tps"):
            assert kept(page, chart)[0] >= admins_newest, chart
        nothing_left("Fleet")
        shot(page, "signed-in-after-another-user-laptop-light")
        assert errors == []


# What "usable" is checked as, on each page: the theme is the one asked for, with readable text
# (WCAG contrast >= 4.5 between the page's text and background); the document needs no
# sideways scrolling; and the header's controls and the page's own controls lie wholly inside
# the viewport (a wide table scrolls inside its own `.scroll` box, which must fit); the page's
# own controls must be there to be checked.
LAYOUT = """sel => {
  const lum = (c) => {
    const [r, g, b] = c.match(/[\\d.]+/g).slice(0, 3).map((v) => {
      v = Number(v) / 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const style = getComputedStyle(document.body);
  const bg = lum(style.backgroundColor), fg = lum(style.color);
  const width = document.documentElement.clientWidth;
  const shown = (e) => e.checkVisibility() && e.getBoundingClientRect().width > 0;
  const own = [...document.querySelectorAll(sel)].filter(shown);
  const controls = [...document.querySelectorAll("header.top > *, header.top nav a")]
    .filter(shown).concat(own);
  const outside = controls.filter((e) => {
    const r = e.getBoundingClientRect();
    return r.left < 0 || r.right > width + 0.5;
  }).map((e) => e.outerHTML.slice(0, 80));
  return {
    theme: document.documentElement.dataset.theme,
    bg, contrast: (Math.max(bg, fg) + 0.05) / (Math.min(bg, fg) + 0.05),
    sideways: document.documentElement.scrollWidth - window.innerWidth,
    own: own.length, outside,
  };
}"""
PAGES = {  # page -> (URL fragment, its own controls: at least one must be visible)
    "fleet": ("#/fleet", "#fleet-cards .stat, .charts figure, [data-testid^=pool-] .scroll"),
    "tasks": ("#/tasks", "#task-filters select, #task-filters input, main .scroll"),
    "task": ("#/task/{task}", "[data-testid=task-text], #replay, #task-cards .stat"),
    "compare": (
        "#/compare",
        "#compare-form select, #compare-form input, #compare-form textarea, [data-testid=cmp-run]",
    ),
    "usage": ("#/usage", "#usage-filters select, main .scroll"),  # ORCH-329
}


def assert_usable(page: Page, sel: str, width: int, theme: str) -> None:
    got = page.evaluate(LAYOUT, sel)
    assert got["theme"] == theme, got
    assert (got["bg"] < 0.2) if theme == "dark" else (got["bg"] > 0.8), got
    assert got["contrast"] >= 4.5, got
    assert got["sideways"] <= 0, got
    assert got["own"] > 0 and got["outside"] == [], got
    assert page.viewport_size is not None and page.viewport_size["width"] == width


@pytest.mark.parametrize(
    ("viewport", "dark"),
    [(LAPTOP, False), (LAPTOP, True), (PHONE, False), (PHONE, True)],
    ids=["laptop-light", "laptop-dark", "phone-light", "phone-dark"],
)
def test_orch_226_every_page_is_usable_at_both_widths_in_light_and_dark(
    fleet: Fleet, tmp_path: Path, viewport: dict[str, int], dark: bool
) -> None:
    """ORCH-226: sign-in, fleet, tasks, a task and compare, each at 1280 and 390 px wide, in
    light and in dark (the system's colour scheme): the theme applies with readable text, no
    page scrolls sideways, and the header's and the page's controls lie inside the viewport.
    ORCH-227: each page's screenshot is saved."""
    theme = "dark" if dark else "light"
    size = "laptop" if viewport == LAPTOP else "phone"
    task = submit(fleet.url, KEY_ACME, prompt=f"usable on the {size}", max_tokens=8)
    wait_for(
        lambda: httpx.get(f"{fleet.url}/v2/tasks/{task}", headers=bearer(ADMIN)).json()[
            "finished_ms"
        ],
        what="the task to finish",
    )
    with browser(tmp_path / "profile", viewport=viewport, dark=dark) as ctx:
        page = ctx.new_page()
        page.goto(fleet.url + "/")
        page.get_by_test_id("token").wait_for()
        assert_usable(page, "#signin-form input, [data-testid=signin]", viewport["width"], theme)
        shot(page, f"usable-signin-{size}-{theme}")
        errors = sign_in(page, fleet.url, ADMIN)
        for name, (fragment, sel) in PAGES.items():
            page.goto(f"{fleet.url}/ui/{fragment.format(task=task)}")
            page.locator(f"#page-{name}:not([hidden])").wait_for()
            if name == "fleet":
                page.get_by_test_id("worker-w2").wait_for()
            elif name == "tasks":
                page.get_by_test_id(f"task-{task}").wait_for()
            elif name == "task":
                page.wait_for_selector("[data-testid=task-text][data-done='1']")
            elif name == "usage":
                page.get_by_test_id("usage-acme").wait_for()
            else:
                page.locator("#cmp-targets input[value='worker:w1']").wait_for()
            assert_usable(page, sel, viewport["width"], theme)
            shot(page, f"usable-{name}-{size}-{theme}")
        assert errors == []


def test_orch_272_a_task_of_three_choices_shows_each_choice_apart(
    fleet: Fleet, tmp_path: Path
) -> None:
    """ORCH-272, ORCH-270: a task of n=3 shows three blocks, in index order, each holding the
    text of its own choice's token events (not the three interleaved), and so does its replay."""
    with worker(fleet.model, fleet.tmp, fleet.url, "w3", slots=3, extra=["--pool", "host-c"]):
        task = submit(fleet.url, KEY_ACME, prompt="three ways", max_tokens=12, n=3, ignore_eos=True)
        wait_for(
            lambda: httpx.get(f"{fleet.url}/v2/tasks/{task}", headers=bearer(ADMIN)).json()[
                "finished_ms"
            ],
            timeout=60,
            what="the task of three choices to finish",
        )
        texts = ["", "", ""]
        with httpx.stream("GET", f"{fleet.url}/v2/tasks/{task}/events", headers=bearer(ADMIN)) as r:
            event = ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "token":
                    data = json.loads(line[6:])
                    texts[data["index"]] += data["t"]
        assert all(texts) and len(set(texts)) > 1, "three seeds: the choices differ"
        with browser(tmp_path / "profile", viewport=LAPTOP) as ctx:
            page = ctx.new_page()
            errors = sign_in(page, fleet.url, ADMIN)
            page.goto(f"{fleet.url}/ui/#/task/{task}")
            page.wait_for_selector("[data-testid=task-text][data-done='1']")
            shown = page.eval_on_selector_all(
                "[data-testid=task-text] [data-choice]", "bs => bs.map(b => b.textContent)"
            )
            assert shown == texts
            page.get_by_role("button", name="Replay").click()
            page.wait_for_function(
                "() => !document.querySelector('#replay').disabled"
                " && document.querySelectorAll('[data-testid=task-text] [data-choice]').length"
                " === 3",
            )
            assert [page.get_by_test_id(f"choice-{k}").text_content() for k in range(3)] == texts
            shot(page, "task-choices-laptop-light")
            assert errors == []
