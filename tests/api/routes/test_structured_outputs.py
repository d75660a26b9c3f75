"""Structured outputs on the real engine, through the official OpenAI client: every completed
answer parses and matches its schema, streamed or whole; refused schemas get their 400."""

import asyncio
import json
import random
import re
from enum import StrEnum
from typing import Annotated, Any, Literal

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel, Field

from tests.conftest import MODEL, RunningServer

ASK = [{"role": "user", "content": "Tell me the color of a banana."}]
# Every string is bounded: a tiny model would otherwise write until max_tokens.
SCHEMAS: dict[str, dict[str, Any]] = {
    "nested objects": {
        "type": "object",
        "properties": {
            "fruit": {"type": "string", "maxLength": 12},
            "looks": {
                "type": "object",
                "properties": {
                    "color": {"type": "string", "maxLength": 10},
                    "ripe": {"type": "boolean"},
                },
                "required": ["color", "ripe"],
                "additionalProperties": False,
            },
        },
        "required": ["fruit", "looks"],
        "additionalProperties": False,
    },
    "array with min and max items": {
        "type": "object",
        "properties": {
            "colors": {
                "type": "array",
                "items": {"type": "string", "maxLength": 8},
                "minItems": 2,
                "maxItems": 3,
            }
        },
        "required": ["colors"],
    },
    "enums": {
        "type": "object",
        "properties": {
            "color": {"enum": ["yellow", "green", "brown"]},
            "size": {"type": "string", "enum": ["S", "M", "L"]},
        },
        "required": ["color", "size"],
    },
    "$defs and $ref": {
        "type": "object",
        "$defs": {
            "shade": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "maxLength": 10},
                    "dark": {"type": "boolean"},
                },
                "required": ["name", "dark"],
            }
        },
        "properties": {"main": {"$ref": "#/$defs/shade"}, "other": {"$ref": "#/$defs/shade"}},
        "required": ["main", "other"],
    },
    "integers with ranges": {
        "type": "object",
        "properties": {
            "count": {"type": "integer", "minimum": 3, "maximum": 9},
            "weight": {"type": "number", "minimum": 0.5, "exclusiveMaximum": 2},
        },
        "required": ["count", "weight"],
    },
    "strings with maxLength and pattern": {
        "type": "object",
        "properties": {
            "code": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
            "note": {"type": "string", "maxLength": 15},
        },
        "required": ["code", "note"],
    },
}


def _json_schema(schema: dict[str, Any], strict: bool | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": "answer", "schema": schema}
    if strict is not None:
        spec["strict"] = strict
    return {"type": "json_schema", "json_schema": spec}


def _whole(client: openai.OpenAI, **kwargs: Any) -> tuple[str, str]:
    choice = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=200, **kwargs
    ).choices[0]
    return choice.message.content or "", choice.finish_reason


def _streamed(client: openai.OpenAI, **kwargs: Any) -> tuple[str, str]:
    text, finish = "", ""
    for chunk in client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=200, stream=True, **kwargs
    ):
        text += chunk.choices[0].delta.content or ""
        finish = chunk.choices[0].finish_reason or finish
    return text, finish


@pytest.mark.parametrize("name", list(SCHEMAS))
@pytest.mark.parametrize("strict", [True, None])
def test_every_answer_parses_and_matches_its_schema(
    client: openai.OpenAI, name: str, strict: bool | None
) -> None:
    schema = SCHEMAS[name]
    for get in (_whole, _streamed):
        text, finish = get(client, response_format=_json_schema(schema, strict), temperature=0)
        assert finish == "stop", (name, text)
        jsonschema.validate(json.loads(text), schema)


def test_json_object_answers_are_objects(client: openai.OpenAI) -> None:
    for get in (_whole, _streamed):
        text, finish = get(client, response_format={"type": "json_object"}, temperature=0)
        if finish == "stop":
            assert isinstance(json.loads(text), dict)
        else:  # cut by max_tokens inside a string: still the start of an object
            assert text.lstrip().startswith("{")


def test_streamed_and_whole_answers_are_the_same_text(client: openai.OpenAI) -> None:
    # A property of the serving path, over schemas and sampled (seeded) answers.
    rng = random.Random(0)
    for name, schema in SCHEMAS.items():
        seed = rng.randrange(2**31)
        args = {"response_format": _json_schema(schema), "temperature": 1.0, "seed": seed}
        assert _whole(client, **args) == _streamed(client, **args), name


class Ripeness(StrEnum):
    GREEN = "green"
    RIPE = "ripe"


class Fruit(BaseModel):
    # Bounded everywhere: the tiny demo model would otherwise write digits or text until
    # max_tokens (still valid JSON, but never finished).
    name: str = Field(max_length=12)
    color: Literal["yellow", "green", "red"]
    ripeness: Ripeness
    seeds: int | None = Field(ge=0, le=99)
    tags: list[Annotated[str, Field(max_length=8)]] = Field(max_length=2)


def test_the_client_parses_into_a_pydantic_model(client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(
        model=MODEL, messages=ASK, response_format=Fruit, max_tokens=200, temperature=0
    )
    message = completion.choices[0].message
    assert completion.choices[0].finish_reason == "stop", message.content
    assert isinstance(message.parsed, Fruit)
    assert message.parsed == Fruit.model_validate_json(message.content or "")


def test_regex_and_choice(client: openai.OpenAI) -> None:
    for get in (_whole, _streamed):
        text, finish = get(
            client,
            temperature=0,
            extra_body={"structured_outputs": {"regex": "[a-z]{3,8}-[0-9]{2}"}},
        )
        assert finish == "stop"
        assert re.fullmatch("[a-z]{3,8}-[0-9]{2}", text), text
        text, _ = get(
            client,
            temperature=0,
            extra_body={"structured_outputs": {"choice": ["yes", "no", "maybe"]}},
        )
        assert text in ("yes", "no", "maybe")


def test_text_completions_take_a_schema(client: openai.OpenAI) -> None:
    schema = SCHEMAS["enums"]
    reply = client.completions.create(
        model=MODEL,
        prompt="A banana",
        max_tokens=100,
        temperature=0,
        extra_body={"response_format": _json_schema(schema)},
    )
    assert reply.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(reply.choices[0].text), schema)


@pytest.mark.parametrize(
    ("schema", "keyword", "param"),
    [
        (
            {"type": "object", "properties": {"a": {"not": {"type": "string"}}}},
            "not",
            "/properties/a",
        ),
        ({"type": "object", "if": {"required": ["a"]}, "then": {"required": ["b"]}}, "if", ""),
        ({"type": "object", "allOf": [{"required": ["a"]}, {"required": ["b"]}]}, "allOf", ""),
        (
            {
                "type": "object",
                "properties": {"p": {"type": "string", "pattern": "^(?=.*[A-Z]).+$"}},
            },
            "pattern",
            "/properties/p",
        ),
        (
            {"type": "object", "properties": {"f": {"type": "string", "format": "credit-card"}}},
            "format",
            "/properties/f",
        ),
        (
            {"type": "object", "properties": {"t": {"type": "array", "uniqueItems": True}}},
            "uniqueItems",
            "/properties/t",
        ),
        ({"type": "bogus"}, "type", "/type"),
    ],
)
def test_schemas_it_cannot_honour_are_refused_and_it_keeps_serving(
    http: httpx.Client, client: openai.OpenAI, schema: dict, keyword: str, param: str
) -> None:
    body = {"model": MODEL, "messages": ASK, "response_format": _json_schema(schema)}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_json_schema"
    assert error["param"] == "response_format.json_schema.schema" + param
    assert f"'{keyword}'" in error["message"]
    assert _whole(client, temperature=0)[1] in ("stop", "length")  # still serving


async def test_mixed_traffic_in_one_batch_is_all_right(async_client: openai.AsyncOpenAI) -> None:
    # Structured, tool and plain requests share engine steps, in several orders: each gets
    # its own constraint (no backend latched onto by the first, vllm#43920).
    weather = {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "maxLength": 20}},
                "required": ["city"],
            },
        },
    }

    async def structured() -> None:
        schema = SCHEMAS["enums"]
        reply = await async_client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            max_tokens=100,
            temperature=0,
            response_format=_json_schema(schema),
        )
        jsonschema.validate(json.loads(reply.choices[0].message.content or ""), schema)

    async def tool() -> None:
        reply = await async_client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            max_tokens=100,
            temperature=0,
            tools=[weather],
            tool_choice="required",
        )
        (call,) = reply.choices[0].message.tool_calls or []
        assert call.function.name == "get_weather"
        jsonschema.validate(json.loads(call.function.arguments), weather["function"]["parameters"])

    async def choice() -> None:
        reply = await async_client.chat.completions.create(
            model=MODEL,
            messages=ASK,
            max_tokens=20,
            temperature=0,
            extra_body={"structured_outputs": {"choice": ["red", "blue"]}},
        )
        assert reply.choices[0].message.content in ("red", "blue")

    async def plain() -> None:
        reply = await async_client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=30, temperature=0
        )
        assert reply.choices[0].message.tool_calls is None
        assert reply.choices[0].message.content

    kinds = [structured, tool, choice, plain] * 3
    for order in range(3):
        random.Random(order).shuffle(kinds)
        await asyncio.gather(*(kind() for kind in kinds))


def test_the_model_worker_masks_tokens_with_our_cpu_kernel(
    client: openai.OpenAI, server: RunningServer
) -> None:
    # server/engine/cpu_bitmask.py, loaded by vLLM into each of its processes as a plugin: the
    # worker, where the masks are applied, says so the first time it applies one. (That the
    # answers are right is what the tests above check.)
    reply = client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=24, response_format={"type": "json_object"}
    )
    assert reply.choices[0].message.content
    workers = [line for line in server.log().splitlines() if "Worker" in line]
    assert any("applied by Kangaroo's kernel" in line for line in workers)
