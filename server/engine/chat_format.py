"""Chat messages and tools → the text a model reads, for the server and for finetune alike.

A model's chat template renders OpenAI-style messages. Tool calling adds three things the
template may or may not know: the `tools` offered, assistant turns that carry `tool_calls`, and
`tool` turns with results. Templates that read `tools` (Hermes, Llama 3, Mistral, Qwen, the demo
model's) get them as they expect: `tools=` and tool-call arguments as objects. Templates that
ignore them get the generic format: the tools described in the system message, calls written as
`<tool_call>{"name": ..., "arguments": ...}</tool_call>` in the assistant's text (the format
whose grammar the engine enforces) and results as user turns in `<tool_response>`.

Which format a model gets is decided once, from its template (`detect_tool_format`), unless the
`tool_call_parser` setting names one. Training rows and requests go through the same functions,
so an adapter learns exactly the text it is served with.
"""

import json
from collections.abc import Sequence
from typing import Any

import jinja2

GENERIC = "generic"
TOOL_CALL_OPEN, TOOL_CALL_CLOSE = "<tool_call>", "</tool_call>"
# The parser each known marker in a chat template stands for (vLLM's tool-parser names).
_TEMPLATE_MARKERS = (
    ("<tool_call>", "hermes"),
    ("[TOOL_CALLS]", "mistral"),
    ("<|python_tag|>", "llama3_json"),
    ("<function=", "qwen3_coder"),
)
_PROBE_TOOL = {
    "type": "function",
    "function": {
        "name": "kangaroo_probe_tool",
        "description": "probe",
        "parameters": {"type": "object", "properties": {}},
    },
}


class TemplateError(ValueError):
    """The chat template refused the messages; the message says why."""


def detect_tool_format(tokenizer: Any) -> str:
    """The tool-call parser a model's template is written for, or GENERIC when it ignores tools.

    A template reads `tools` when rendering with a probe tool changes the text; its call format
    is recognised by the markers it writes.
    """
    messages = [{"role": "user", "content": "hi"}]
    try:
        plain = _apply(tokenizer, messages, None, add_generation_prompt=True)
        with_tools = _apply(tokenizer, messages, [_PROBE_TOOL], add_generation_prompt=True)
    except TemplateError:
        return GENERIC
    if plain == with_tools:
        return GENERIC
    template = str(getattr(tokenizer, "chat_template", "") or "")
    for marker, parser in _TEMPLATE_MARKERS:
        if marker in template:
            return parser
    return GENERIC


def render(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None,
    tool_format: str,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text: `messages` (OpenAI format, tool calls included) with `tools` offered."""
    if tool_format == GENERIC:
        return _apply(tokenizer, generic_messages(messages, tools), None, add_generation_prompt)
    return _apply(tokenizer, native_messages(messages), tools or None, add_generation_prompt)


def native_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as templates that read tools expect them: call arguments as objects."""
    result = []
    for message in messages:
        calls = message.get("tool_calls")
        if calls:
            message = {**message, "tool_calls": [_with_object_arguments(c) for c in calls]}
        result.append(message)
    return result


def generic_messages(
    messages: Sequence[dict[str, Any]], tools: Sequence[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Messages for a template that ignores tools: everything written out as plain text."""
    result: list[dict[str, Any]] = []
    for message in messages:
        role, content = message["role"], message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            calls = "\n".join(tool_call_text(call) for call in message["tool_calls"])
            result.append({"role": "assistant", "content": f"{content}{calls}"})
        elif role == "tool":
            wrapped = f"<tool_response>\n{content}\n</tool_response>"
            result.append({"role": "user", "content": wrapped})
        else:
            result.append(dict(message))
    if tools:
        described = tools_prompt(tools)
        if result and result[0]["role"] == "system":
            result[0] = {"role": "system", "content": f"{result[0]['content']}\n\n{described}"}
        else:
            result.insert(0, {"role": "system", "content": described})
    return result


def tools_prompt(tools: Sequence[dict[str, Any]]) -> str:
    """The system-message text that offers `tools` in the generic format."""
    listed = "\n".join(json.dumps(tool["function"], ensure_ascii=False) for tool in tools)
    return (
        "You may call functions to answer. The functions:\n"
        f"<tools>\n{listed}\n</tools>\n"
        "To call one, answer with\n"
        f'{TOOL_CALL_OPEN}\n{{"name": <function name>, "arguments": <JSON object>}}\n'
        f"{TOOL_CALL_CLOSE}"
    )


def tool_call_text(call: dict[str, Any]) -> str:
    """One call in the generic (Hermes) format: what the grammar makes the model write."""
    function = _with_object_arguments(call)["function"]
    body = json.dumps({"name": function["name"], "arguments": function["arguments"]})
    return f"{TOOL_CALL_OPEN}\n{body}\n{TOOL_CALL_CLOSE}"


def _with_object_arguments(call: dict[str, Any]) -> dict[str, Any]:
    # OpenAI sends arguments as a JSON string; templates (and HF's own) expect an object.
    function = call["function"]
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            arguments = {}  # validated by the API layer; a training row keeps going
    return {**call, "function": {**function, "arguments": arguments}}


def _apply(
    tokenizer: Any,
    messages: Sequence[dict[str, Any]],
    tools: Sequence[dict[str, Any]] | None,
    add_generation_prompt: bool,
) -> str:
    if not messages and not add_generation_prompt:
        return ""
    try:
        text: str = tokenizer.apply_chat_template(
            list(messages), tools=tools, tokenize=False, add_generation_prompt=add_generation_prompt
        )
    except jinja2.TemplateError as exc:
        raise TemplateError(str(exc)) from None
    return text
