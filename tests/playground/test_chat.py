"""The playground in headless Chromium against the session's real server (demo model, no keys)."""

import json
import re
import time

import httpx
from playwright.sync_api import Browser, Locator, Page, Route, expect

from tests.conftest import MODEL, RunningServer
from tests.playground.conftest import (
    PHONE,
    ask,
    last_answer,
    open_page,
    screenshot,
    wait_for_answer,
)
from tests.playground.network import cuttable_link

CHAT = "**/v1/chat/completions"

# Samples the newest turn's text once per animation frame: what the user could have seen.
RECORD_FRAMES = """() => {
  window.frames_seen = [];
  const sample = () => {
    const content = document.querySelector("#conversation li:last-child .content");
    const text = content ? content.textContent : "";
    if (text && text !== window.frames_seen.at(-1)) window.frames_seen.push(text);
    requestAnimationFrame(sample);
  };
  requestAnimationFrame(sample);
}"""


# The demo model ends most answers within a dozen tokens (~30 ms, two frames). This makes the
# page's chat requests run to max_tokens, long enough to watch and to stop, and keeps the bodies
# the page built. It wraps the page's fetch and leaves the network path as it is. Its special
# tokens (ids 0-4) are barred too: past its answer the model would write end-of-turn tokens,
# which stream no text, and the answer would stop growing on screen.
LONG = {"ignore_eos": True, "logit_bias": {str(token_id): -100 for token_id in range(5)}}
LONG_ANSWERS = """
window.sentBodies = [];
const pageFetch = window.fetch;
window.fetch = (url, options) => {
  if (String(url).endsWith("/v1/chat/completions")) {
    const body = JSON.parse(options.body);
    window.sentBodies.push(body);
    options = { ...options, body: JSON.stringify({ ...body, ...EXTRA }) };
  }
  return pageFetch(url, options);
};
""".replace("EXTRA", json.dumps(LONG))


def _long_answers(page: Page) -> None:
    page.add_init_script(LONG_ANSWERS)
    page.reload()
    expect(page.locator("#model")).to_have_value(MODEL)


def _replay(http: httpx.Client, sent: dict) -> dict:
    """The page's request sent again without streaming: the API's own answer to it."""
    body = {k: v for k, v in sent.items() if k not in ("stream", "stream_options")}
    response = http.post("/v1/chat/completions", json=body)
    response.raise_for_status()
    return response.json()


def test_the_answer_streams_in_and_equals_the_api_answer(page: Page, http: httpx.Client) -> None:
    _long_answers(page)
    page.evaluate(RECORD_FRAMES)
    ask(page, "Hi", temperature=0, max_tokens=300)  # ~0.5 s of generation: many frames
    answer = wait_for_answer(page)
    final = answer.locator(".content").text_content()

    [sent] = page.evaluate("window.sentBodies")
    assert sent == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "max_tokens": 300,
    }
    frames = page.evaluate("window.frames_seen")
    partial = {text for text in frames if text != final}
    assert len(partial) >= 2, frames  # it grew over several frames, not in one piece
    assert all(final.startswith(text) for text in partial), frames
    api = _replay(http, sent | LONG)
    assert final == api["choices"][0]["message"]["content"]
    _assert_stats(answer, api)


def test_the_conversation_goes_along_and_a_screenshot_is_kept(
    page: Page, http: httpx.Client
) -> None:
    page.fill("#system", "You are Kangaroo.")
    ask(page, "Tell me the color of a banana.")
    first = wait_for_answer(page).locator(".content").text_content()
    with page.expect_request(CHAT) as request:
        ask(page, "Which number follows six?")
    answer = wait_for_answer(page)

    sent = request.value.post_data_json
    assert sent["messages"] == [
        {"role": "system", "content": "You are Kangaroo."},
        {"role": "user", "content": "Tell me the color of a banana."},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Which number follows six?"},
    ]
    api = _replay(http, sent)
    assert answer.locator(".content").text_content() == api["choices"][0]["message"]["content"]
    _assert_stats(answer, api)
    assert screenshot(page, "playground.png").stat().st_size > 10_000


def _assert_stats(answer: Locator, api: dict) -> None:
    usage = api["usage"]
    expect(answer.locator("[data-stat=finish]")).to_have_text(api["choices"][0]["finish_reason"])
    tokens = answer.locator("[data-stat=completion-tokens]")
    expect(tokens).to_have_text(f"{usage['completion_tokens']} tokens")
    prompt = answer.locator("[data-stat=prompt-tokens]")
    expect(prompt).to_have_text(f"prompt {usage['prompt_tokens']} tokens")
    expect(answer.locator("[data-stat=ttft]")).to_have_text(re.compile(r"^first token \d+ ms$"))
    expect(answer.locator("[data-stat=speed]")).to_have_text(re.compile(r"^\d+\.\d tokens/s$"))


def test_stop_keeps_the_partial_text_and_the_server_aborts(
    page: Page, demo_server: RunningServer
) -> None:
    _long_answers(page)
    ask(page, "Count with me.", max_tokens=2000)  # 4-5 s of generation on 2 CPU cores
    content = last_answer(page).locator(".content")
    expect(content).to_have_text(re.compile(".{20}"), timeout=10_000)  # the answer is under way
    assert demo_server.engine_load()["num_unfinished_requests"] == 1
    page.click("#stop")
    stopped = time.monotonic()

    expect(last_answer(page).locator("[data-stat=finish]")).to_have_text("stopped")
    expect(page.locator("#send")).to_be_enabled()
    expect(page.locator("#stop")).to_be_disabled()
    while demo_server.engine_load()["num_unfinished_requests"] != 0:
        assert time.monotonic() - stopped < 1.5, "the engine still runs the stopped request"
        time.sleep(0.05)
    partial = content.text_content()
    time.sleep(0.5)
    assert content.text_content() == partial  # the partial answer stays, and grows no more
    assert len(partial) >= 20


def test_a_dropped_connection_is_resumed_and_the_answer_completes_once(
    browser: Browser, demo_server: RunningServer, http: httpx.Client
) -> None:
    port = int(demo_server.url.rsplit(":", 1)[1])
    with cuttable_link(port) as link, open_page(browser, link.url) as page:
        _long_answers(page)
        before = _counted(http)
        ask(page, "Hi", temperature=0, max_tokens=1000)  # 1-2 s of generation
        content = last_answer(page).locator(".content")
        expect(content).to_have_text(re.compile(".{20}"), timeout=10_000)  # under way
        assert link.cut() >= 1  # the network drops the page's stream mid-answer

        answer = wait_for_answer(page)
        expect(answer.locator("[data-stat=resumed]")).to_have_text(re.compile(r"^resumed \d+×$"))
        [sent] = page.evaluate("window.sentBodies")
        api = _replay(http, sent | LONG)  # greedy: the API's whole answer to the same request
        assert content.text_content() == api["choices"][0]["message"]["content"]
        _assert_stats(answer, api)
    # Generated once for the page (plus the replay above): resuming did not ask again.
    assert _counted(http) == (before[0] + 2, before[1] + 2000)


def _counted(http: httpx.Client) -> tuple[int, int]:
    """Requests and completion tokens the server has counted in all."""
    rows = http.get("/v1/usage").json()["data"]
    return sum(r["requests"] for r in rows), sum(r["completion_tokens"] for r in rows)


def test_errors_are_shown_readably(page: Page) -> None:
    ask(page, "Hi", max_tokens=100_000)  # the real server's 400: over the context length
    error = last_answer(page).locator(".error")
    expect(error).to_have_text(
        re.compile(r"^Error 400 context_length_exceeded: This model's maximum context length is")
    )
    expect(page.locator("#prompt")).to_have_value("Hi")  # given back, to send again

    def stream_then_error(route: Route) -> None:
        events = [
            {"choices": [{"index": 0, "delta": {"content": "Half an answer"}}]},
            {"error": {"message": "The engine failed.", "type": "server_error", "code": "x"}},
        ]
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        route.fulfill(status=200, content_type="text/event-stream", body=body)

    page.route(CHAT, stream_then_error)
    ask(page, "Hi")
    answer = last_answer(page)
    expect(answer.locator(".error")).to_have_text("Error x: The engine failed.")
    expect(answer.locator(".content")).to_have_text("Half an answer")
    expect(answer.locator("[data-stat=finish]")).to_have_text("error")


def test_model_text_is_shown_as_text_never_as_html(page: Page) -> None:
    injected = '<img src=x onerror="window.pwned=1"><b>bold</b><script>window.pwned=2</script>'

    def answer_with_html(route: Route) -> None:
        chunk = {"choices": [{"index": 0, "delta": {"content": injected}, "finish_reason": "stop"}]}
        error = {"error": {"message": injected, "type": "server_error"}}
        events = [chunk, error]
        body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        route.fulfill(status=200, content_type="text/event-stream", body=body)

    page.route(CHAT, answer_with_html)
    ask(page, "Say something odd.")
    answer = wait_for_answer(page)
    expect(answer.locator(".content")).to_have_text(injected)
    expect(answer.locator(".error")).to_have_text(f"Error server_error: {injected}")
    assert page.locator("#conversation img, #conversation b, #conversation script").count() == 0
    assert page.evaluate("window.pwned") is None


def _inside(page: Page, selector: str, width: int, height: int) -> bool:
    box = page.locator(selector).bounding_box()
    assert box is not None, selector
    return box["x"] >= 0 and box["x"] + box["width"] <= width and box["y"] + box["height"] <= height


def test_a_phone_sized_screen(browser: Browser, demo_server: RunningServer) -> None:
    width, height = PHONE["viewport"]["width"], PHONE["viewport"]["height"]
    with open_page(browser, demo_server.url, **PHONE) as page:
        expect(page.locator("#model")).to_have_value(MODEL)
        expect(page.locator("#api-key")).to_be_hidden()  # the settings start folded
        ask(page, "Hi", temperature=None, max_tokens=None)
        expect(wait_for_answer(page).locator(".content")).not_to_be_empty()
        screenshot(page, "playground-phone.png")
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways
        assert all(_inside(page, c, width, height) for c in ("#prompt", "#send", "#stop"))

        page.click("#settings summary")
        expect(page.locator("#api-key")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        assert _inside(page, "#api-key", width, height)


def test_the_key_field_is_there_when_no_key_is_needed(page: Page) -> None:
    expect(page.locator("#server-status")).to_have_text(f"Serving {MODEL}")
    expect(page.locator("#api-key")).to_be_visible()
    expect(page.locator("#api-key-label")).not_to_contain_class("needed")
