"""A real browser for the view's tests: Playwright driving Debian's chromium, with a fresh profile each time.

Reusable beyond tests/web: import the `browser` fixture (and `playwright_session`, which it needs) into a
test module or conftest, then `page = browser(http_credentials=...).new_page()`; `screenshot(page, name)`
keeps a picture of the outcome under tests/web/artifacts/.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
VIEWPORT = {"width": 1400, "height": 900}

Launch = Callable[..., Any]  # (**context options) -> playwright BrowserContext


@pytest.fixture(scope="session")
def playwright_session() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"no browser at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        yield playwright


@pytest.fixture
def browser(playwright_session: Any, tmp_path: Path) -> Iterator[Launch]:
    """Launches chromium with an empty profile; every context it opened is closed after the test."""
    contexts: list[Any] = []

    def launch(**options: Any) -> Any:
        context = playwright_session.chromium.launch_persistent_context(
            str(tmp_path / f"profile-{len(contexts)}"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
            **options,
        )
        context.set_default_timeout(15_000)
        contexts.append(context)
        return context

    yield launch
    for context in contexts:
        context.close()


def screenshot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '-', name)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
