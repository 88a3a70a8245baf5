"""The browser fixtures (tests/web/browser.py) for every test under tests/web."""

from tests.web.browser import browser, playwright_session  # noqa: F401
