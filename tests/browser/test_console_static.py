"""The console's files in a real browser: they load without a script or CSP error, sign-in
works at laptop and phone widths, light and dark (ORCH-220, ORCH-221); the harness drives
Debian's chromium, and skips (strict: fails) without it (ORCH-227)."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from starlette.applications import Starlette

from orchestratord.http.console import routes as console_routes
from tests.browser.harness import (
    LAPTOP,
    PHONE,
    REPO,
    browser,
    chromium_path,
    require_browser,
    screenshot_dir,
    shot,
)
from tests.support import free_port


@pytest.fixture
def static_console() -> Iterator[str]:
    """The console's routes alone on a real loopback server (no API behind them)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(Starlette(routes=console_routes), port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise TimeoutError("static console server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("name", "viewport", "dark"),
    [("laptop-light", LAPTOP, False), ("phone-dark", PHONE, True)],
)
def test_orch_220_console_loads_clean_and_keeps_the_token_out_of_urls(
    static_console: str, tmp_path: Path, name: str, viewport: dict[str, int], dark: bool
) -> None:
    require_browser()
    with browser(tmp_path / "profile", viewport=viewport, dark=dark) as ctx:
        page = ctx.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda e: problems.append(f"pageerror: {e}"))
        page.on(
            "console",
            lambda m: (
                problems.append(m.text) if m.type == "error" and "404" not in m.text else None
            ),
        )
        requested: list[str] = []
        page.on("request", lambda r: requested.append(r.url))
        page.goto(static_console + "/")
        assert page.url == static_console + "/ui/"
        page.get_by_test_id("token").wait_for()
        theme = page.evaluate("document.documentElement.dataset.theme")
        assert theme == ("dark" if dark else "light")
        shot(page, f"signin-{name}")
        page.get_by_test_id("token").fill("secret-key-123")
        page.get_by_test_id("signin").click()
        # No API behind this server: the console keeps trying, and says so.
        page.get_by_text("reconnecting").wait_for()
        stored = page.evaluate("sessionStorage.getItem('llorch.token')")
        assert stored == "secret-key-123"
        assert not any("secret-key-123" in u for u in requested)
        assert all(u.startswith(static_console) for u in requested), requested
        assert problems == []


def test_orch_227_without_the_browser_the_tests_skip_or_fail_under_strict(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """ORCH-227: no chromium (neither $LLORCH_CHROMIUM nor one on PATH): the browser tests
    skip, or fail under LLORCH_TEST_STRICT=1; screenshots go to $LLORCH_SCREENSHOTS, by
    default .cache/screenshots/."""
    monkeypatch.setenv("LLORCH_CHROMIUM", str(tmp_path / "no-chromium"))
    monkeypatch.setenv("PATH", str(tmp_path))
    assert chromium_path() is None
    monkeypatch.setattr("tests.support.STRICT", False)
    with pytest.raises(pytest.skip.Exception):
        require_browser()
    monkeypatch.setattr("tests.support.STRICT", True)
    with pytest.raises(pytest.fail.Exception):
        require_browser()
    monkeypatch.setenv("LLORCH_SCREENSHOTS", str(tmp_path / "shots"))
    assert screenshot_dir() == tmp_path / "shots" and (tmp_path / "shots").is_dir()
    monkeypatch.delenv("LLORCH_SCREENSHOTS")
    assert screenshot_dir() == REPO / ".cache" / "screenshots"


@pytest.mark.e2e
def test_orch_227_the_browser_is_debians_chromium_headless(tmp_path: Path) -> None:
    """ORCH-227: the browser Playwright drives is the system's `chromium` (its version), in
    headless mode, not a browser Playwright downloaded."""
    path = require_browser()
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60).stdout
    version = re.search(r"Chromium (\d+(?:\.\d+){3})", out)
    assert version, out
    with browser(tmp_path / "profile") as ctx:
        page = ctx.new_page()
        product = ctx.new_cdp_session(page).send("Browser.getVersion")["product"]
        agent = page.evaluate("navigator.userAgent")
    assert product.split("/")[-1] == version.group(1), (product, out)
    assert "HeadlessChrome/" in agent, agent
