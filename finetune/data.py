"""Training data: read a JSONL file, check every row, and turn valid rows into token ids + targets.

Rows are OpenAI fine-tuning chats (`{"messages": [...]}`, `"weight": 0|1` on assistant messages)
or prompt/completion pairs, which become a user turn and an assistant turn. A chat row may offer
`tools` (function tools); its assistant messages may then carry `tool_calls` (arguments as a JSON
string, content empty or null), answered by `tool` messages that name the call's id.

The prompt is rendered by `server.engine.chat_format` with the base tokenizer's own chat template
and the tool format the server picks for it, so the adapter is trained on exactly the text it is
served with. Targets cover assistant tokens only (tool calls included), up to and including the
end-of-turn token, so the model learns to stop.
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.engine import chat_format

ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = {"role", "content", "weight", "name", "tool_calls", "tool_call_id"}
IGNORE = -100  # target of a token that takes no loss (torch's cross-entropy ignore_index)


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one row: a stable code and a message naming the value."""

    row: int  # 1-based line number
    code: str
    message: str

    def __str__(self) -> str:
        return f"row {self.row}: {self.code}: {self.message}"


@dataclass(frozen=True)
class Example:
    """A tokenized row. `targets[t]` is the token to predict after `input_ids[: t + 1]`."""

    row: int
    input_ids: list[int]
    targets: list[int]  # same length; IGNORE where no loss is taken

    @property
    def num_target_tokens(self) -> int:
        """Tokens that take loss."""
        return sum(t != IGNORE for t in self.targets)


@dataclass
class Dataset:
    """The valid examples of a file and what was wrong with the rest."""

    path: Path
    sha256: str
    examples: list[Example] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    num_rows: int = 0
    num_tokens: int = 0  # before truncation
    longest: int = 0
    num_truncated: int = 0

    @property
    def invalid_rows(self) -> list[int]:
        """Row numbers with at least one problem."""
        return sorted({p.row for p in self.problems})

    def summary(self) -> str:
        """Totals in a few lines."""
        return (
            f"{self.path}: {self.num_rows} rows, {len(self.invalid_rows)} invalid, "
            f"{self.num_tokens} tokens, longest row {self.longest} tokens, "
            f"{self.num_truncated} rows would be truncated"
        )


def load_dataset(path: Path, tokenizer: Any, max_seq_len: int, context_len: int) -> Dataset:
    """Check and tokenize every row of `path`.

    A row longer than `context_len` (the base model's context) is invalid (`too_many_tokens`);
    one longer than `max_seq_len` is valid and will be truncated to it.
    """
    raw = path.read_bytes()
    dataset = Dataset(path, hashlib.sha256(raw).hexdigest())
    tool_format = chat_format.detect_tool_format(tokenizer)  # as the server decides it
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        dataset.num_rows += 1
        chat, problems = parse_chat(number, line)
        if not problems and chat is not None:
            example, problems = _tokenize(number, chat, tokenizer, tool_format, context_len)
            if example is not None:
                _count(dataset, example, max_seq_len)
        dataset.problems.extend(problems)
    if dataset.num_rows == 0:
        dataset.problems.append(Problem(0, "empty_file", f"{path} has no rows"))
    return dataset


def _count(dataset: Dataset, example: Example, max_seq_len: int) -> None:
    length = len(example.input_ids)
    dataset.num_tokens += length
    dataset.longest = max(dataset.longest, length)
    if length > max_seq_len:
        dataset.num_truncated += 1
        example = Example(
            example.row, example.input_ids[:max_seq_len], example.targets[:max_seq_len]
        )
    if example.num_target_tokens:
        dataset.examples.append(example)
    else:
        dataset.problems.append(
            Problem(
                example.row,
                "no_trainable_tokens",
                f"no assistant token within max_seq_len ({max_seq_len})",
            )
        )


@dataclass(frozen=True)
class Chat:
    """A row's messages as given and the tools it offers, as the server passes them on."""

    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None = None


def parse_row(number: int, line: str) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    """The row's messages (prompt/completion rows become two), or every problem found in it."""
    chat, problems = parse_chat(number, line)
    return (chat.messages if chat is not None else None), problems


def parse_chat(number: int, line: str) -> tuple[Chat | None, list[Problem]]:
    """The row's messages and tools, or every problem found in it."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return None, [Problem(number, "invalid_json", f"not valid JSON: {exc.msg}")]
    if not isinstance(row, dict):
        return None, [Problem(number, "invalid_row", f"a row must be an object, not {row!r:.60}")]
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            return None, [
                Problem(number, "invalid_messages", "'messages' must be a non-empty list")
            ]
        tools = row.get("tools")
        problems = list(_tools_problems(number, [] if tools is None else tools))
        served = None if problems else _served_tools(tools)
        # With invalid tools, calls are not checked against them: one problem is enough.
        names = {t["function"]["name"] for t in served or ()} if not problems else None
        problems += _message_problems(number, messages, names)
        return Chat(messages, served), problems
    if "prompt" in row or "completion" in row:
        messages, problems = _prompt_completion(number, row)
        return (Chat(messages) if messages is not None else None), problems
    keys = ", ".join(map(repr, row)) or "none"
    return None, [
        Problem(number, "invalid_row", f"needs 'messages' or 'prompt'+'completion'; has {keys}")
    ]


def _prompt_completion(
    number: int, row: dict[str, Any]
) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    problems = [
        Problem(number, "missing_content", f"'{key}' must be a non-empty string")
        for key in ("prompt", "completion")
        if not isinstance(row.get(key), str) or not row[key]
    ]
    if problems:
        return None, problems
    return [
        {"role": "user", "content": row["prompt"]},
        {"role": "assistant", "content": row["completion"]},
    ], []


def _tools_problems(number: int, tools: Any) -> Iterator[Problem]:
    """`tools` must be a list of function tools with unique names and object parameters."""
    if not isinstance(tools, list):
        yield Problem(number, "invalid_tools", f"'tools' must be a list, not {tools!r:.60}")
        return
    names: set[str] = set()
    for i, tool in enumerate(tools):
        where = f"tools[{i}]"
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            yield Problem(
                number,
                "invalid_tools",
                f'{where} must be {{"type": "function", "function": {{...}}}}, not {tool!r:.60}',
            )
            continue
        name, parameters = function.get("name"), function.get("parameters")
        if not isinstance(name, str) or not name:
            yield Problem(
                number,
                "invalid_tools",
                f"{where}.function.name {name!r} must be a non-empty string",
            )
        elif name in names:
            yield Problem(
                number, "invalid_tools", f"{where}.function.name {name!r} names two tools"
            )
        else:
            names.add(name)
        if not isinstance(parameters, dict) or parameters.get("type") != "object":
            yield Problem(
                number,
                "invalid_tools",
                f"{where}.function.parameters {parameters!r:.60} must be a JSON schema "
                'of an object ("type": "object")',
            )
        if not isinstance(function.get("description", ""), str):
            yield Problem(number, "invalid_tools", f"{where}.function.description must be a string")


def _served_tools(tools: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    """Valid tools as the server passes them to the template: name, description, parameters."""
    served = []
    for tool in tools or ():
        function = tool["function"]
        described = {k: function[k] for k in ("name", "description") if function.get(k) is not None}
        served.append(
            {"type": "function", "function": {**described, "parameters": function["parameters"]}}
        )
    return served or None


def _message_problems(
    number: int, messages: list[Any], tool_names: set[str] | None
) -> Iterator[Problem]:
    call_ids: set[str] = set()  # ids of the calls made so far: what a tool message may answer
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            yield Problem(number, "invalid_message", f"{where} must be an object")
            continue
        if (role := message.get("role")) not in ROLES:
            yield Problem(
                number,
                "unrecognized_role",
                f"{where}.role {role!r} is not one of {', '.join(ROLES)}",
            )
        yield from _content_problems(number, where, message)
        if extra := sorted(set(message) - MESSAGE_KEYS):
            yield Problem(number, "unrecognized_key", f"{where} has unknown keys {extra}")
        if "weight" in message and (role != "assistant" or message["weight"] not in (0, 1)):
            yield Problem(
                number,
                "invalid_weight",
                f"{where}.weight {message['weight']!r}: only assistant messages, 0 or 1",
            )
        if message.get("tool_calls") is not None:  # null: no calls, as OpenAI's clients send it
            yield from _call_problems(number, where, message, tool_names)
            calls = message["tool_calls"] if isinstance(message["tool_calls"], list) else []
            call_ids.update(c["id"] for c in calls if isinstance(c, dict) and _is_text(c.get("id")))
        if role == "tool":
            yield from _tool_result_problems(number, where, message, call_ids)
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        yield Problem(number, "example_missing_assistant_message", "no assistant message")


def _content_problems(number: int, where: str, message: dict[str, Any]) -> Iterator[Problem]:
    content = message.get("content")
    if message.get("role") == "assistant" and message.get("tool_calls"):
        # A message that calls tools may say nothing besides.
        if content is not None and not isinstance(content, str):
            yield Problem(number, "missing_content", f"{where}.content must be a string or null")
    elif not _is_text(content):
        yield Problem(number, "missing_content", f"{where}.content must be a non-empty string")


def _call_problems(
    number: int, where: str, message: dict[str, Any], tool_names: set[str] | None
) -> Iterator[Problem]:
    calls = message["tool_calls"]
    if message.get("role") != "assistant":
        yield Problem(number, "invalid_tool_call", f"{where}.tool_calls: only assistant messages")
        return
    if not isinstance(calls, list) or not calls:
        yield Problem(number, "invalid_tool_call", f"{where}.tool_calls must be a non-empty list")
        return
    for j, call in enumerate(calls):
        at = f"{where}.tool_calls[{j}]"
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(function, dict)
            or not _is_text(call.get("id"))
            or call.get("type", "function") != "function"
            or not _is_text(function.get("name"))
        ):
            yield Problem(
                number,
                "invalid_tool_call",
                f'{at} must be {{"id", "type": "function", "function": {{"name", "arguments"}}}}, '
                f"not {call!r:.80}",
            )
            continue
        if not _is_object_json(function.get("arguments")):
            yield Problem(
                number,
                "invalid_tool_call",
                f"{at}.function.arguments {function.get('arguments')!r:.60} must be a string "
                "encoding a JSON object",
            )
        if tool_names is not None and function["name"] not in tool_names:
            offered = ", ".join(sorted(tool_names)) or "none"
            yield Problem(
                number,
                "unknown_tool",
                f"{at}.function.name {function['name']!r} is not one of the row's tools: {offered}",
            )


def _tool_result_problems(
    number: int, where: str, message: dict[str, Any], call_ids: set[str]
) -> Iterator[Problem]:
    call_id = message.get("tool_call_id")
    if not _is_text(call_id):
        yield Problem(
            number,
            "missing_tool_call_id",
            f"{where}.tool_call_id must name the call it answers, not {call_id!r:.60}",
        )
    elif call_id not in call_ids:
        yield Problem(
            number,
            "unknown_tool_call_id",
            f"{where}.tool_call_id {call_id!r} answers no earlier assistant tool call",
        )


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _is_object_json(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return isinstance(json.loads(value), dict)
    except json.JSONDecodeError:
        return False


def _tokenize(
    number: int, chat: Chat, tokenizer: Any, tool_format: str, context_len: int
) -> tuple[Example | None, list[Problem]]:
    try:
        example = tokenize_chat(number, chat.messages, tokenizer, chat.tools, tool_format)
    except (chat_format.TemplateError, PrefixError) as exc:
        return None, [Problem(number, "template_error", f"the chat template refused it: {exc}")]
    if len(example.input_ids) > context_len:
        message = f"{len(example.input_ids)} tokens; the base model's limit is {context_len}"
        return None, [Problem(number, "too_many_tokens", message)]
    if not example.num_target_tokens:
        return None, [
            Problem(number, "no_trainable_tokens", "every assistant message has weight 0")
        ]
    return example, []


class PrefixError(ValueError):
    """The chat template renders a conversation so that a shorter one is not a prefix of it."""


def tokenize_chat(
    row: int,
    messages: list[dict[str, Any]],
    tokenizer: Any,
    tools: list[dict[str, Any]] | None = None,
    tool_format: str | None = None,
) -> Example:
    """Token ids of the rendered chat and targets on the assistant turns (weight 1).

    The chat is rendered as the server renders it (`chat_format.render`, with `tools` offered;
    `tool_format` defaults to the one the template calls for). An assistant turn's text, tool
    calls included, is where the rendering of the turns before it (with the generation prompt)
    ends and the rendering including it ends; its targets run to the end-of-turn token.
    """
    if tool_format is None:
        tool_format = chat_format.detect_tool_format(tokenizer)

    def render(turns: list[dict[str, Any]], add_generation_prompt: bool) -> str:
        return chat_format.render(tokenizer, turns, tools, tool_format, add_generation_prompt)

    turns = [_template_turn(m) for m in messages]
    text = render(turns, add_generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        head = render(turns[:i], add_generation_prompt=True)
        turn = render(turns[: i + 1], add_generation_prompt=False)
        if not (text.startswith(head) and text.startswith(turn)):
            # Such templates rewrite earlier turns (e.g. drop reasoning): spans cannot be found.
            raise PrefixError(f"rendering messages[{i}] changes the text before it")
        spans.append((len(head), len(turn)))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids: list[int] = encoded["input_ids"]
    learn = [any(s <= a < e for s, e in spans) for a, _ in encoded["offset_mapping"]]
    _stop_at_end_of_turn(ids, learn, tokenizer.eos_token_id)
    # Predict token t+1 from tokens up to t: the target at t is ids[t+1] when t+1 is learned.
    targets = [ids[t + 1] if learn[t + 1] else IGNORE for t in range(len(ids) - 1)] + [IGNORE]
    return Example(row, ids, targets)


def _template_turn(message: dict[str, Any]) -> dict[str, Any]:
    """A message as the server passes it to the template (`ChatMessage.as_template_input`)."""
    turn: dict[str, Any] = {"role": message["role"], "content": message.get("content") or ""}
    for key in ("name", "tool_call_id"):
        if message.get(key) is not None:
            turn[key] = message[key]
    if message.get("tool_calls"):
        turn["tool_calls"] = [
            {
                "id": call["id"],
                "type": "function",
                "function": {
                    "name": call["function"]["name"],
                    "arguments": call["function"]["arguments"],
                },
            }
            for call in message["tool_calls"]
        ]
    return turn


def _stop_at_end_of_turn(ids: list[int], learn: list[bool], eos_id: int | None) -> None:
    """Within each learned run, drop what follows the end-of-turn token (e.g. a newline).

    The server stops at that token, so the model never generates what the template puts after it.
    """
    after_eos = False
    for t, token in enumerate(ids):
        if not learn[t]:
            after_eos = False
        elif after_eos:
            learn[t] = False
        elif token == eos_id:
            after_eos = True
