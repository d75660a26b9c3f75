"""Pieces of OpenAI's response format shared by chat and text completions."""

import json
import time
from typing import Any

from server.engine.generation import ChoiceDelta, TokenLogprob, ToolCallDelta
from server.observability.request_id import new_id
from server.structured.json_text import JsonStringGuard

# Status for a request whose client left before the reply was ready (nginx's convention).
CLIENT_CLOSED_REQUEST = 499


class Reply:
    """What every part of one response shares; the chunk prefix is encoded once."""

    def __init__(
        self,
        response_id: str,
        object_type: str,
        model: str,
        *,
        prompt_tokens: int,
        include_usage: bool,
        return_token_ids: bool,
    ):
        self.id = response_id
        self.model = model
        self.created = int(time.time())
        self.prompt_tokens = prompt_tokens
        self.include_usage = include_usage
        self.return_token_ids = return_token_ids
        self._prefix = (
            f'{{"id":"{response_id}","object":"{object_type}",'
            f'"created":{self.created},"model":{json.dumps(model)},'
        )

    def chunk(self, choices: list[dict[str, Any]]) -> str:
        """One streamed chunk; with include_usage, OpenAI sends `"usage":null` on each."""
        body = '"choices":' + json.dumps(choices, ensure_ascii=False)
        return self._prefix + body + (',"usage":null}' if self.include_usage else "}")

    def usage_chunk(self, completion_tokens: int) -> str:
        """The last chunk of a stream with include_usage: no choices, the token counts."""
        usage = json.dumps(self.usage(completion_tokens))
        return self._prefix + '"choices":[],"usage":' + usage + "}"

    def usage(self, completion_tokens: int) -> dict[str, int]:
        """OpenAI's `usage` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": self.prompt_tokens + completion_tokens,
        }


class ChoiceTotals:
    """Accumulates the deltas of every choice for a reply returned whole."""

    def __init__(self, num_choices: int):
        self.texts: list[list[str]] = [[] for _ in range(num_choices)]
        self.token_ids: list[list[int]] = [[] for _ in range(num_choices)]
        self.logprobs: list[list[TokenLogprob]] = [[] for _ in range(num_choices)]
        self.has_logprobs = False
        self.finish_reasons: list[str | None] = [None] * num_choices

    def add(self, index: int, delta: ChoiceDelta) -> None:
        """Add the delta of choice `index`."""
        self.texts[index].append(delta.text)
        self.token_ids[index].extend(delta.token_ids)
        if delta.logprobs is not None:
            self.has_logprobs = True
            self.logprobs[index].extend(delta.logprobs)
        if delta.finish_reason is not None:
            self.finish_reasons[index] = delta.finish_reason

    def text(self, index: int) -> str:
        """The whole text of choice `index`."""
        return "".join(self.texts[index])

    def logprobs_of(self, index: int) -> list[TokenLogprob] | None:
        """The token logprobs of choice `index`, or None when none were asked for."""
        return self.logprobs[index] if self.has_logprobs else None

    @property
    def completion_tokens(self) -> int:
        """Tokens generated over all choices."""
        return sum(len(ids) for ids in self.token_ids)


class ChatChoice:
    """One choice of a chat reply as it arrives: content, tool calls, finish reason.

    Tool calls go out in the shape every client assembles: the first delta of a call carries
    `index`, `id`, `type`, `function.name` and `function.arguments: ""`; later deltas carry
    only `index` and `function.arguments` (raw slices of the model's text). JSON text (the
    answer under a JSON `response_format`, every call's arguments) passes a guard that escapes
    raw control characters inside strings.
    """

    def __init__(self, json_content: bool, named_tool: bool):
        self._content_guard = JsonStringGuard() if json_content else None
        self._named_tool = named_tool
        self.calls: list[dict[str, Any]] = []  # OpenAI tool_calls, arguments accumulated
        self._guards: list[JsonStringGuard] = []  # one per call: arguments are JSON
        self._indices: dict[int, int] = {}  # the engine's call index -> ours (0, 1, ... in order)

    def content(self, text: str) -> str:
        """The delta's content as sent."""
        return self._content_guard.feed(text) if self._content_guard and text else text

    def tool_call_deltas(self, calls: tuple[ToolCallDelta, ...]) -> list[dict[str, Any]]:
        """OpenAI delta entries for the engine's tool-call deltas, in order (one per chunk)."""
        entries = []
        for call in calls:
            index = self._indices.get(call.index)
            if index is None:  # a new call: its id and name, arguments ""
                index = self._indices[call.index] = len(self.calls)
                self.calls.append(_new_call(call))
                self._guards.append(JsonStringGuard())
                function = {"name": self.calls[index]["function"]["name"], "arguments": ""}
                entries.append(
                    {
                        "index": index,
                        "id": self.calls[index]["id"],
                        "type": "function",
                        "function": function,
                    }
                )
            if call.arguments:
                fragment = self._guards[index].feed(call.arguments)
                self.calls[index]["function"]["arguments"] += fragment
                entries.append({"index": index, "function": {"arguments": fragment}})
        return entries

    def finish_reason(self, engine_reason: str | None) -> str | None:
        """OpenAI's reason: `tool_calls` after a call (auto or required), `length` wins."""
        if engine_reason == "stop" and self.calls and not self._named_tool:
            return "tool_calls"
        return engine_reason


def _new_call(call: ToolCallDelta) -> dict[str, Any]:
    return {
        "id": call.id or f"call_{new_id()}",
        "type": "function",
        "function": {"name": call.name or "", "arguments": ""},
    }


def cursor_page(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    """A page of a cursor-paginated list as OpenAI sends it: `after` = `last_id` goes on."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
