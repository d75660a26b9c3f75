"""A request's structured-output and tool fields → what the engine enforces; 400 otherwise.

`response_format` (`json_object`, `json_schema`) and vLLM's `structured_outputs` extension
become one `OutputConstraint`; `tools`, `tool_choice` and `parallel_tool_calls` become a
`ToolUse`. Every schema is checked first (`server.structured.schemas`): a keyword the engine
would silently ignore is refused by name, never dropped.
"""

import asyncio
from typing import Any

from server.api.protocol import ChatCompletionRequest, ChatMessage, SamplingFields
from server.engine.generation import OutputConstraint, ToolUse
from server.errors import InvalidRequestError
from server.structured.schemas import check_pattern, check_schema

# The schema of a function that takes no parameters (OpenAI's default).
NO_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


async def structure(body: SamplingFields) -> tuple[OutputConstraint | None, ToolUse | None]:
    """`output_constraint` and, for chat, `tool_use`; the schema checks run off the event loop
    (a first look at a large schema takes milliseconds)."""
    tools = getattr(body, "tools", None)
    if body.response_format is None and body.structured_outputs is None and not tools:
        return None, tool_use(body) if isinstance(body, ChatCompletionRequest) else None
    return await asyncio.to_thread(_structure, body)


def _structure(body: SamplingFields) -> tuple[OutputConstraint | None, ToolUse | None]:
    tools = tool_use(body) if isinstance(body, ChatCompletionRequest) else None
    return output_constraint(body), tools


def output_constraint(body: SamplingFields) -> OutputConstraint | None:
    """The constraint `response_format` or `structured_outputs` asks for (at most one)."""
    fmt, extension = body.response_format, body.structured_outputs
    if fmt is not None and fmt.type != "text" and extension is not None:
        raise InvalidRequestError(
            "Give either 'response_format' or 'structured_outputs', not both.",
            "structured_outputs",
        )
    if fmt is not None:
        return _response_format(body)
    if extension is not None:
        return _extension(body)
    return None


def tool_use(body: ChatCompletionRequest) -> ToolUse | None:
    """The tools offered and how they may be used; None when the request offers none."""
    if not body.tools:
        if body.tool_choice is not None:
            raise InvalidRequestError(
                "'tool_choice' is only allowed when 'tools' are given.", "tool_choice"
            )
        return None
    names: set[str] = set()
    tools = []
    for i, tool in enumerate(body.tools):
        function = tool.function
        if function.name in names:
            raise InvalidRequestError(
                f"'tools.{i}.function.name': '{function.name}' is given to more than one tool; "
                "names must be unique.",
                f"tools.{i}.function.name",
            )
        names.add(function.name)
        parameters = function.parameters if function.parameters is not None else NO_PARAMETERS
        _check_parameters(parameters, i, function.name)
        # Every call is held to its schema, `strict` or not (vLLM would leave non-strict
        # arguments free), so `strict` itself is not passed on.
        described = function.model_dump(exclude_none=True, exclude={"strict"})
        tools.append({"type": "function", "function": {**described, "parameters": parameters}})
    choice, named = _choice(body, names)
    return ToolUse(tuple(tools), choice, named, parallel=body.parallel_tool_calls is not False)


def check_tool_messages(messages: list[ChatMessage]) -> None:
    """Every `tool` message answers a call made by an earlier assistant message."""
    calls: set[str] = set()
    for i, message in enumerate(messages):
        calls.update(call.id for call in message.tool_calls or ())
        if message.role == "tool" and message.tool_call_id not in calls:
            raise InvalidRequestError(
                f"'messages.{i}.tool_call_id' is '{message.tool_call_id}', which no earlier "
                "assistant message's 'tool_calls' has.",
                f"messages.{i}.tool_call_id",
            )


def _response_format(body: SamplingFields) -> OutputConstraint | None:
    fmt = body.response_format
    assert fmt is not None
    if fmt.type != "json_schema":
        if fmt.json_schema is not None:
            raise InvalidRequestError(
                f"'response_format.json_schema' is only allowed with type 'json_schema', "
                f"not '{fmt.type}'.",
                "response_format.json_schema",
            )
        return None if fmt.type == "text" else OutputConstraint(json_schema={"type": "object"})
    spec = fmt.json_schema
    if spec is None or spec.schema_ is None:
        raise InvalidRequestError(
            "'response_format.json_schema.schema' is required with type 'json_schema'.",
            "response_format.json_schema.schema",
        )
    check_schema(spec.schema_, where="response_format.json_schema.schema", name=spec.name)
    return OutputConstraint(json_schema=spec.schema_)


def _extension(body: SamplingFields) -> OutputConstraint:
    ext = body.structured_outputs
    assert ext is not None
    given = {k: v for k, v in ext.model_dump(by_alias=True).items() if v is not None}
    if len(given) != 1:
        raise InvalidRequestError(
            "'structured_outputs' takes exactly one of 'json', 'regex', 'choice', 'grammar'; "
            f"got {sorted(given) or 'none'}.",
            "structured_outputs",
        )
    if ext.json_ is not None:
        check_schema(ext.json_, where="structured_outputs.json")
        return OutputConstraint(json_schema=ext.json_)
    if ext.regex is not None:
        check_pattern(ext.regex, where="structured_outputs.regex")
        return OutputConstraint(regex=ext.regex)
    if ext.choice is not None:
        if not ext.choice or any(not c for c in ext.choice):
            raise InvalidRequestError(
                "'structured_outputs.choice' must be a non-empty list of non-empty strings.",
                "structured_outputs.choice",
            )
        return OutputConstraint(choice=tuple(ext.choice))
    if not ext.grammar or not ext.grammar.strip():
        raise InvalidRequestError(
            "'structured_outputs.grammar' must not be empty.", "structured_outputs.grammar"
        )
    return OutputConstraint(grammar=ext.grammar)


def _check_parameters(parameters: dict[str, Any], i: int, name: str) -> None:
    where = f"tools.{i}.function.parameters"
    if parameters.get("type") != "object":
        raise InvalidRequestError(
            f'\'{where}\' must be a JSON schema of an object ("type": "object"): a tool\'s '
            "arguments are a JSON object.",
            where,
        )
    check_schema(parameters, where=where, name=name)


def _choice(body: ChatCompletionRequest, names: set[str]) -> tuple[str, str | None]:
    choice = body.tool_choice
    if choice is None:
        return "auto", None
    if isinstance(choice, str):
        return choice, None
    if choice.function.name not in names:
        raise InvalidRequestError(
            f"'tool_choice.function.name' is '{choice.function.name}', which is not one of "
            f"the tools: {', '.join(sorted(names))}.",
            "tool_choice.function.name",
        )
    return "function", choice.function.name
