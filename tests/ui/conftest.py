"""One browser per test module, shared by the module's tests.

Not per session: Playwright's synchronous API keeps an event loop running in the main
thread while its browser is open, and `make test` runs modules in any order in each
worker process, so a browser left open would break every later test that starts an
event loop of its own (``asyncio.run``) in that process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from tests.support.browser import launched

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launched() as chromium:
        yield chromium
