"""Training data: read a JSONL file, check every row, and turn valid rows into token ids + targets.

Rows are OpenAI fine-tuning chats (`{"messages": [...]}`, `"weight": 0|1` on assistant messages)
or prompt/completion pairs, which become a user turn and an assistant turn. The prompt is the
base tokenizer's own chat template, the one the server renders, so the adapter is trained on
exactly the text it is served with. Targets cover assistant tokens only, up to and including the
end-of-turn token, so the model learns to stop.
"""

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

ROLES = ("system", "user", "assistant", "tool")
MESSAGE_KEYS = {"role", "content", "weight", "name"}
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
    for number, line in enumerate(raw.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        dataset.num_rows += 1
        messages, problems = parse_row(number, line)
        if not problems and messages is not None:
            example, problems = _tokenize(number, messages, tokenizer, context_len)
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


def parse_row(number: int, line: str) -> tuple[list[dict[str, Any]] | None, list[Problem]]:
    """The row's messages (prompt/completion rows become two), or every problem found in it."""
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
        return messages, list(_message_problems(number, messages))
    if "prompt" in row or "completion" in row:
        return _prompt_completion(number, row)
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


def _message_problems(number: int, messages: list[Any]) -> Iterator[Problem]:
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
        if not isinstance(message.get("content"), str) or not message["content"]:
            yield Problem(number, "missing_content", f"{where}.content must be a non-empty string")
        if extra := sorted(set(message) - MESSAGE_KEYS):
            yield Problem(number, "unrecognized_key", f"{where} has unknown keys {extra}")
        if "weight" in message and (role != "assistant" or message["weight"] not in (0, 1)):
            yield Problem(
                number,
                "invalid_weight",
                f"{where}.weight {message['weight']!r}: only assistant messages, 0 or 1",
            )
    if not any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        yield Problem(number, "example_missing_assistant_message", "no assistant message")


def _tokenize(
    number: int, messages: list[dict[str, Any]], tokenizer: Any, context_len: int
) -> tuple[Example | None, list[Problem]]:
    try:
        example = tokenize_chat(number, messages, tokenizer)
    except (jinja2.TemplateError, PrefixError) as exc:
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


def tokenize_chat(row: int, messages: list[dict[str, Any]], tokenizer: Any) -> Example:
    """Token ids of the rendered chat and targets on the assistant turns (weight 1).

    An assistant turn's text is where the rendering of the turns before it (with the generation
    prompt) ends and the rendering including it ends; its targets run to the end-of-turn token.
    """
    turns = [{"role": m["role"], "content": m["content"]} for m in messages]
    text = _render(tokenizer, turns, add_generation_prompt=False)
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant" or message.get("weight", 1) == 0:
            continue
        head = _render(tokenizer, turns[:i], add_generation_prompt=True)
        turn = _render(tokenizer, turns[: i + 1], add_generation_prompt=False)
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


def _render(tokenizer: Any, turns: list[dict[str, str]], add_generation_prompt: bool) -> str:
    if not turns and not add_generation_prompt:
        return ""
    text: str = tokenizer.apply_chat_template(
        turns, tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return text


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
