"""POST /v1/completions against the real engine."""

import openai

from tests.conftest import MODEL


def test_string_prompt(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="the kangaroo", max_tokens=6)
    assert reply.object == "text_completion"
    assert reply.id.startswith("cmpl-")
    (choice,) = reply.choices
    assert choice.index == 0
    assert choice.finish_reason in ("stop", "length")
    assert 1 <= reply.usage.completion_tokens <= 6


def test_list_of_prompts_gives_indexed_choices(client: openai.OpenAI, tokenizer) -> None:
    prompts = ["the kangaroo", "a quick blue", "hello world"]
    reply = client.completions.create(
        model=MODEL,
        prompt=prompts,
        max_tokens=4,
        n=2,
        temperature=0,
        extra_body={"ignore_eos": True},
    )
    assert sorted(c.index for c in reply.choices) == list(range(6))
    by_index = {c.index: c.text for c in reply.choices}
    # Greedy: both choices of one prompt agree; each prompt's choice matches a solo request.
    for p, prompt in enumerate(prompts):
        assert by_index[2 * p] == by_index[2 * p + 1]
        solo = client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=4, temperature=0, extra_body={"ignore_eos": True}
        )
        assert solo.choices[0].text == by_index[2 * p]
    prompt_tokens = sum(len(tokenizer.encode(p)) for p in prompts)
    assert reply.usage.prompt_tokens == prompt_tokens
    assert reply.usage.completion_tokens == 3 * 2 * 4


def test_token_id_prompt_equals_text_prompt(client: openai.OpenAI, tokenizer) -> None:
    ids = tokenizer.encode("the kangaroo")
    by_text = client.completions.create(
        model=MODEL, prompt="the kangaroo", max_tokens=5, temperature=0
    )
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=5, temperature=0)
    assert by_ids.choices[0].text == by_text.choices[0].text


def test_stream_of_several_prompts_finishes_each(client: openai.OpenAI) -> None:
    finishes = {}
    text: dict[int, str] = {}
    chunks = client.completions.create(
        model=MODEL,
        prompt=["one", "two"],
        max_tokens=5,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    usage = None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            text[choice.index] = text.get(choice.index, "") + choice.text
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert finishes == {0: "length", 1: "length"}
    assert usage is not None
    assert usage.completion_tokens == 10


def test_logprobs_legacy_format(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model=MODEL, prompt="hello", max_tokens=4, logprobs=2, extra_body={"ignore_eos": True}
    )
    lp = reply.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 4
    assert all(len(alts) <= 2 for alts in lp.top_logprobs)
    assert lp.text_offset[0] == 0
    assert lp.text_offset == sorted(lp.text_offset)
