"""A real headless Chromium (Debian's, driven by Playwright) for the playground's tests.

Playwright's own browser download needs the internet; the system Chromium is installed by
`scripts/setup.sh dev`. Screenshots go to tests/artifacts/ (kept after the run, not in git).
"""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from tests.conftest import MODEL, REPO, RunningServer
from tests.playground.cpus import browser_cpus, kept_off, starting_on

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "tests" / "artifacts"
# Without the background-networking flags Chromium phones home at start and, on a closed
# network, those refused connections slow it down. Playwright adds a fresh user-data dir.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True}


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for the package's tests; each test gets a fresh context (storage, key)."""
    assert shutil.which(CHROMIUM), f"{CHROMIUM} is missing: run scripts/setup.sh dev"
    with starting_on(browser_cpus()):  # Playwright's driver and the browser
        playwright = sync_playwright().start()
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    try:
        yield chromium
    finally:
        chromium.close()
        playwright.stop()


@pytest.fixture(scope="package")
def demo_server(server: RunningServer) -> Iterator[RunningServer]:
    """The session's real server (demo model, no keys), kept off the browser's CPU here."""
    with kept_off(server.process.pid, browser_cpus()):
        yield server


@contextmanager
def open_page(browser: Browser, url: str, **context_options: Any) -> Iterator[Page]:
    """A page at `url` in a fresh context; fails the test if the page's script threw."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    page.set_default_timeout(30_000)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(url)
    yield page
    context.close()
    assert not errors, f"the page's script threw: {errors}"


@pytest.fixture
def page(browser: Browser, demo_server: RunningServer) -> Iterator[Page]:
    """The playground of the session's real server (demo model, no keys), desktop-sized."""
    with open_page(browser, demo_server.url) as opened:
        expect(opened.locator("#model")).to_have_value(MODEL)  # the picker is filled
        yield opened


def screenshot(page: Page, name: str) -> Path:
    """Save a screenshot of the whole page as a test artifact; its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=path, full_page=True)
    return path


def ask(
    page: Page, prompt: str, temperature: float | None = 0, max_tokens: int | None = 64
) -> None:
    """Set the sampling fields (None: leave as they are), type `prompt` and send it."""
    if temperature is not None:
        page.fill("#temperature", str(temperature))
    if max_tokens is not None:
        page.fill("#max-tokens", str(max_tokens))
    page.fill("#prompt", prompt)
    page.click("#send")


def last_answer(page: Page) -> Locator:
    """The newest assistant turn."""
    return page.locator("#conversation .assistant").last


def wait_for_answer(page: Page) -> Locator:
    """The newest assistant turn once it has finished (its stats show a finish reason)."""
    answer = last_answer(page)
    answer.locator("[data-stat=finish]").wait_for()
    return answer
