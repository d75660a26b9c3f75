"""A response as it is generated: the Responses API's stream events and the response object.

    response.created → response.in_progress → per output item: output_item.added,
    (content_part.added, output_text.delta…, output_text.done, content_part.done) or
    (function_call_arguments.delta…, function_call_arguments.done), output_item.done
    → exactly one of response.completed | response.incomplete | response.failed |
      response.cancelled

Every event carries its `sequence_number` (0, 1, …): the cursor a client resumes from. Events
refer to the live response and its items: serialize each one before the next is built. The
chat path's `ChatChoice` turns the engine's deltas into content and tool-call deltas; this only
re-shapes them, so a streamed answer and a stored one are the same text and calls.
"""

import time
from typing import Any

from server.api.replies import ChatChoice
from server.engine.generation import ChoiceDelta
from server.errors import APIError
from server.observability.request_id import new_id
from server.responses.runs import Event

# The terminal event of each final status.
_ENDS = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
    "cancelled": "response.cancelled",
}


def usage(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    """The Responses API's `usage` object."""
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


class ResponseBuilder:
    """Builds one response's events and object from the chat path's deltas."""

    def __init__(self, response: dict[str, Any], choice: ChatChoice):
        self.response = response  # the response object, kept current
        self._choice = choice
        self._seq = 0
        self._message: dict[str, Any] | None = None  # the open message item, if any
        self._calls: dict[int, dict[str, Any]] = {}  # our call index -> its output item
        self._output_tokens = 0
        self.input_tokens = 0

    def start(self) -> list[Event]:
        """The opening events (the response is in progress)."""
        self.response["status"] = "in_progress"
        created = self._event("response.created", response=self.response)
        return [created, self._event("response.in_progress", response=self.response)]

    def add(self, delta: ChoiceDelta) -> list[Event]:
        """The events of one engine delta (text, then tool-call fragments)."""
        self._output_tokens += len(delta.token_ids)
        events = []
        text = self._choice.content(delta.text)
        if text:
            events += self._open_message()
            assert self._message is not None
            self._message["content"][0]["text"] += text
            self.response["output_text"] += text
            events.append(
                self._event(
                    "response.output_text.delta", **self._part_ref(), delta=text, logprobs=[]
                )
            )
        for entry in self._choice.tool_call_deltas(delta.tool_calls):
            events += self._call_delta(entry)
        return events

    def finish(self, engine_reason: str | None) -> list[Event]:
        """The closing events of a generation that ended with `engine_reason`."""
        status = "incomplete" if engine_reason == "length" else "completed"
        if status == "incomplete":
            self.response["incomplete_details"] = {"reason": "max_output_tokens"}
        return self._close_items(status) + self._end(status)

    def fail(self, error: APIError) -> list[Event]:
        """The closing events of a generation that failed."""
        self.response["error"] = {"code": error.code or error.error_type, "message": error.message}
        return self._close_items("incomplete") + self._end("failed")

    def cancel(self) -> list[Event]:
        """The closing events of a cancelled generation."""
        return self._close_items("incomplete") + self._end("cancelled")

    def _end(self, status: str) -> list[Event]:
        self.response["status"] = status
        self.response["usage"] = usage(self.input_tokens, self._output_tokens)
        if status == "completed":
            self.response["completed_at"] = int(time.time())
        return [self._event(_ENDS[status], response=self.response)]

    def _open_message(self) -> list[Event]:
        if self._message is not None:
            return []
        self._message = {
            "id": f"msg_{new_id()}",
            "type": "message",
            "status": "in_progress",
            "role": "assistant",
            "content": [],
        }
        events = self._add_item(self._message)
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        self._message["content"].append(part)
        events.append(self._event("response.content_part.added", **self._part_ref(), part=part))
        return events

    def _call_delta(self, entry: dict[str, Any]) -> list[Event]:
        index = entry["index"]
        if "id" in entry:  # a new call
            item = {
                "id": f"fc_{new_id()}",
                "type": "function_call",
                "status": "in_progress",
                "call_id": entry["id"],
                "name": entry["function"]["name"],
                "arguments": "",
            }
            self._calls[index] = item
            return self._add_item(item)
        item = self._calls[index]
        fragment = entry["function"]["arguments"]
        item["arguments"] += fragment
        return [
            self._event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=self._index(item),
                delta=fragment,
            )
        ]

    def _add_item(self, item: dict[str, Any]) -> list[Event]:
        self.response["output"].append(item)
        return [
            self._event("response.output_item.added", output_index=self._index(item), item=item)
        ]

    def _close_items(self, cut_status: str) -> list[Event]:
        """Done events for every open item; `cut_status` for the ones a stop cut short."""
        events = []
        ended = "completed" if cut_status == "completed" else "incomplete"
        for item in self.response["output"]:
            if item["type"] == "message":
                ref = self._part_ref()
                part = item["content"][0]
                events.append(
                    self._event("response.output_text.done", **ref, text=part["text"], logprobs=[])
                )
                events.append(self._event("response.content_part.done", **ref, part=part))
            else:
                events.append(
                    self._event(
                        "response.function_call_arguments.done",
                        item_id=item["id"],
                        output_index=self._index(item),
                        arguments=item["arguments"],
                    )
                )
            item["status"] = ended
            events.append(
                self._event("response.output_item.done", output_index=self._index(item), item=item)
            )
        return events

    def _part_ref(self) -> dict[str, Any]:
        assert self._message is not None
        return {
            "item_id": self._message["id"],
            "output_index": self._index(self._message),
            "content_index": 0,
        }

    def _index(self, item: dict[str, Any]) -> int:
        return next(i for i, it in enumerate(self.response["output"]) if it is item)

    def _event(self, kind: str, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event
