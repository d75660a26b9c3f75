"""POST /v1/chat/completions against the real engine, through the official OpenAI client."""

import json

import httpx
import openai
import pytest

from tests.conftest import MODEL

HELLO = [{"role": "user", "content": "hello"}]


def test_non_stream_reply_has_openai_shape(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=8)
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.model == MODEL
    (choice,) = reply.choices
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage is not None
    assert 1 <= reply.usage.completion_tokens <= 8


def test_stream_yields_role_then_content_then_finish(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=12, stream=True)
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)


def test_stream_text_equals_non_stream_text_for_same_seed(client: openai.OpenAI) -> None:
    args = {"model": MODEL, "messages": HELLO, "max_tokens": 200, "seed": 7, "temperature": 1.0}
    whole = client.chat.completions.create(**args).choices[0].message.content
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**args, stream=True)
    )
    assert streamed == whole


def test_include_usage_counts_what_was_produced(client: openai.OpenAI, tokenizer) -> None:
    chunks = list(
        client.chat.completions.create(
            model=MODEL,
            messages=HELLO,
            max_tokens=17,
            stream=True,
            logprobs=True,
            stream_options={"include_usage": True},
            extra_body={"ignore_eos": True},
        )
    )
    usage = chunks[-1].usage
    assert chunks[-1].choices == []
    assert all(c.usage is None for c in chunks[:-1])
    tokens_seen = sum(
        len(c.choices[0].logprobs.content) for c in chunks[:-1] if c.choices[0].logprobs
    )
    prompt = tokenizer.apply_chat_template(HELLO, tokenize=False, add_generation_prompt=True)
    assert usage.completion_tokens == tokens_seen == 17
    assert usage.prompt_tokens == len(tokenizer.encode(prompt, add_special_tokens=False))
    assert usage.total_tokens == usage.prompt_tokens + 17


def test_n_returns_that_many_choices(client: openai.OpenAI) -> None:
    # Past its end of turn (ignore_eos), at temperature 2, the trained demo model is unsure.
    reply = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        n=2,
        max_tokens=30,
        seed=1,
        temperature=2.0,
        extra_body={"ignore_eos": True},
    )
    assert sorted(c.index for c in reply.choices) == [0, 1]
    assert reply.choices[0].message.content != reply.choices[1].message.content


def test_n_streams_every_choice_to_its_finish(client: openai.OpenAI) -> None:
    finishes = {}
    for chunk in client.chat.completions.create(
        model=MODEL, messages=HELLO, n=3, max_tokens=10, stream=True
    ):
        for choice in chunk.choices:
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert sorted(finishes) == [0, 1, 2]


async def test_async_client_streams(async_client: openai.AsyncOpenAI) -> None:
    stream = await async_client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=10, stream=True, extra_body={"ignore_eos": True}
    )
    text = [c.choices[0].delta.content async for c in stream if c.choices]
    assert len(text) >= 2


async def test_async_client_non_stream(async_client: openai.AsyncOpenAI) -> None:
    reply = await async_client.chat.completions.create(model=MODEL, messages=HELLO, max_tokens=4)
    assert reply.choices[0].message.role == "assistant"


def test_message_forms_reach_the_template(client: openai.OpenAI) -> None:
    # System, developer, assistant and tool roles, and content as an array of text parts.
    messages = [
        {"role": "system", "content": "be brief"},
        {"role": "developer", "content": [{"type": "text", "text": "really"}]},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "content": "ok",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_answer", "arguments": "{}"},
                }
            ],
        },
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
        {"role": "user", "content": "and?"},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
    assert reply.choices[0].message.role == "assistant"


def test_prompt_tokens_match_the_model_chat_template(client: openai.OpenAI, tokenizer) -> None:
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1)
    expected = tokenizer.apply_chat_template(
        [{"role": "system", "content": "sys"}, {"role": "user", "content": "a\nb"}],
        tokenize=False,
        add_generation_prompt=True,
    )
    assert reply.usage.prompt_tokens == len(tokenizer.encode(expected, add_special_tokens=False))


def test_logprobs_are_returned_per_token(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL,
        messages=HELLO,
        max_tokens=6,
        logprobs=True,
        top_logprobs=3,
        extra_body={"ignore_eos": True},
    )
    content = reply.choices[0].logprobs.content
    assert len(content) == 6
    for entry in content:
        assert entry.logprob <= 0
        assert len(entry.top_logprobs) == 3
        ranked = [alt.logprob for alt in entry.top_logprobs]
        assert ranked == sorted(ranked, reverse=True)
        assert entry.logprob <= ranked[0] + 1e-6


def test_max_completion_tokens_is_honoured(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_completion_tokens=5, extra_body={"ignore_eos": True}
    )
    assert reply.usage.completion_tokens == 5
    assert reply.choices[0].finish_reason == "length"


@pytest.mark.parametrize("stream", [False, True])
def test_response_format_text_is_accepted(client: openai.OpenAI, stream: bool) -> None:
    result = client.chat.completions.create(
        model=MODEL, messages=HELLO, max_tokens=2, response_format={"type": "text"}, stream=stream
    )
    if stream:
        assert list(result)


def test_raw_http_reply_is_plain_json(http: httpx.Client) -> None:
    r = http.post("/v1/chat/completions", json={"model": MODEL, "messages": HELLO, "max_tokens": 2})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert json.loads(r.text)["choices"][0]["message"]["role"] == "assistant"
