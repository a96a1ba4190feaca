"""A real browser for the page's tests: Playwright driving Debian's Chromium.

Playwright's own browser download is not reachable from our machines, so the tests launch
the system binary (``apt-get install chromium``; ``.ci/run`` installs it). Without it the
tests fail and say so: a page that was never opened in a browser is not tested.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "ui"
"""Screenshots the tests take (git-ignored: look at them, never commit them)."""

CHROMIUM_ENV = "MMSERVE_TEST_CHROMIUM"
CHROMIUM_DEFAULT = "/usr/bin/chromium"

# Headless, and quiet: without the background-networking flags Chromium tries to reach
# its own services at start, which would be recorded as third-party requests.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    """The Chromium binary to drive; fails the test with the fix when there is none."""
    path = os.environ.get(CHROMIUM_ENV) or CHROMIUM_DEFAULT
    if not (Path(path).is_file() or shutil.which(path)):
        pytest.fail(
            f"no Chromium at {path}: the page's tests need a real browser. Install Debian's "
            f"(`apt-get install -y chromium`; .ci/run does) or point {CHROMIUM_ENV} at one.",
            pytrace=False,
        )
    return path


@contextmanager
def launched() -> Iterator[Browser]:
    """One headless Chromium (a test session shares it; each test opens its own context)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "Playwright is not installed: `pip install -e '.[dev]'` (or `make setup`).",
            pytrace=False,
        )
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Traffic:
    """Every request a page made and every console error it logged."""

    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("request", self._request)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.console_errors.append(f"uncaught: {exc}"))

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.console_errors.append(message.text)

    def foreign(self, origin: str) -> list[str]:
        """Requests to anywhere but ``origin`` (blob: URLs are the page's own memory)."""
        own = urlsplit(origin)
        return [
            url
            for url in self.requests
            if not url.startswith(f"blob:{origin}/")
            and (urlsplit(url).scheme, urlsplit(url).netloc) != (own.scheme, own.netloc)
        ]


@contextmanager
def opened(
    browser: Browser, viewport: tuple[int, int] = (1280, 800), **context: Any
) -> Iterator[tuple[Page, Traffic]]:
    """A fresh context (no cache, no storage) with one page whose traffic is recorded."""
    width, height = viewport
    ctx = browser.new_context(viewport={"width": width, "height": height}, **context)
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    traffic = Traffic()
    traffic.attach(page)
    try:
        yield page, traffic
    finally:
        ctx.close()


def screenshot(page: Page, name: str) -> Path:
    """Save what the page shows now as ``tests/artifacts/ui/<name>.png``."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
