"""A real headless Chromium for the console tests: Debian's `chromium`, driven by Playwright.

Playwright's own browser download is never used (`playwright install` fetches from the
internet); CI installs Debian's package (.ci/run). Without the browser or the Python package
the tests skip, or fail under LLORCH_TEST_STRICT=1.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support import require

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

REPO = Path(__file__).resolve().parents[2]
LAPTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    found = os.environ.get("LLORCH_CHROMIUM") or shutil.which("chromium")
    return found if found and os.access(found, os.X_OK) else None


def require_browser() -> str:
    """The browser's path; skips (strict: fails) when it or Playwright is missing."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        require(False, "Playwright for Python is not installed (pip install -e '.[dev]')")
    path = chromium_path()
    require(path is not None, "Debian's chromium is not installed (apt-get install chromium)")
    assert path is not None
    return path


def screenshot_dir() -> Path:
    d = Path(os.environ.get("LLORCH_SCREENSHOTS") or REPO / ".cache" / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def shot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as `<dir>/<name>.png` and return its path."""
    path = screenshot_dir() / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".png")
    page.screenshot(path=str(path), full_page=True)
    return path


@contextlib.contextmanager
def browser(
    user_data: Path, *, viewport: dict[str, int] = LAPTOP, dark: bool = False
) -> Iterator[BrowserContext]:
    """A fresh browser profile in `user_data` (no state shared between tests)."""
    path = require_browser()
    from playwright.sync_api import sync_playwright

    user_data.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(user_data),
            executable_path=path,
            headless=True,
            args=FLAGS,
            viewport=viewport,  # type: ignore[arg-type]
            color_scheme="dark" if dark else "light",
        )
        ctx.set_default_timeout(30_000)
        try:
            yield ctx
        finally:
            ctx.close()
