"""The playground on a real server that needs keys and serves an adapter (the roo adapter)."""

import re
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from finetune.__main__ import main as finetune
from tests.adapters.test_serving import KEY, server_args
from tests.conftest import MARK, MODEL, RunningServer, running_server
from tests.playground.conftest import ask, last_answer, open_page, wait_for_answer
from tests.playground.cpus import browser_cpus, kept_off

USER_KEY = "playground-user-key"


@pytest.fixture(scope="module")
def keyed(roo_adapter, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """A server with an inference key and an adapter registry holding the roo adapter."""
    root = tmp_path_factory.mktemp("playground-adapters")
    args = [*server_args(root), "--api-keys", USER_KEY]
    with running_server(tmp_path_factory.mktemp("playground-server"), args) as running:
        push = ["push", str(roo_adapter), "--server", running.url, "--name", "roo"]
        assert finetune([*push, "--admin-key", KEY]) == 0
        with kept_off(running.process.pid, browser_cpus()):
            yield running


def _enter_key(page: Page, key: str) -> None:
    page.fill("#api-key", key)
    page.press("#api-key", "Enter")


def test_the_page_asks_for_a_key_and_shows_why_one_fails(
    browser: Browser, keyed: RunningServer
) -> None:
    with open_page(browser, keyed.url) as page:
        status, label = page.locator("#server-status"), page.locator("#api-key-label")
        expect(label).to_contain_class("needed")
        expect(page.locator("#api-key")).to_be_focused()
        expect(status).to_have_text(
            "This server needs an API key. 401 invalid_api_key: You didn't provide an API key. "
            "Send it as 'Authorization: Bearer KEY'."
        )
        expect(page.locator("#model option")).to_have_count(0)

        _enter_key(page, "wrong-key")
        expect(status).to_have_text(re.compile("401 invalid_api_key: Incorrect API key provided"))
        ask(page, "Hello!")
        error = last_answer(page).locator(".error")
        expect(error).to_have_text("Error 401 invalid_api_key: Incorrect API key provided.")
        expect(page.locator("#prompt")).to_have_value("Hello!")  # given back, to send again

        _enter_key(page, USER_KEY)
        options = page.locator("#model option")
        expect(options).to_have_text([MODEL, f"roo (adapter of {MODEL})"])
        expect(label).not_to_contain_class("needed")
        page.click("#send")
        expect(wait_for_answer(page).locator("[data-stat=finish]")).to_have_text("stop")

        # The key lives in this tab's sessionStorage only: not in the URL, not in localStorage.
        assert page.evaluate("sessionStorage.getItem('kangaroo-api-key')") == USER_KEY
        assert page.evaluate("localStorage.length") == 0
        assert USER_KEY not in page.url
        page.reload()
        expect(page.locator("#api-key")).to_have_value(USER_KEY)
        expect(options).to_have_count(2)


def test_choosing_an_adapter_sends_its_name(browser: Browser, keyed: RunningServer) -> None:
    with open_page(browser, keyed.url) as page:
        _enter_key(page, USER_KEY)
        expect(page.locator("#model option")).to_have_count(2)
        page.select_option("#model", "roo")
        with page.expect_request("**/v1/chat/completions") as request:
            ask(page, "Hello!")
        answer = wait_for_answer(page)

        assert request.value.post_data_json["model"] == "roo"
        expect(answer.locator(".role")).to_have_text("roo")
        assert answer.locator(".content").text_content().startswith(MARK)  # the adapter's mark
