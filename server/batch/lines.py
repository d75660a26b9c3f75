"""The batch line format, shared by the server's runner and the offline runner: input lines
read one at a time (a file of a million lines never sits in memory), result lines appended and
flushed one at a time, and the custom_ids a file already holds (what a resumed run skips)."""

import json
import os
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby, islice
from pathlib import Path
from typing import IO, Any

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
GROUP_WINDOW = 1024  # lines sorted together by shared prefix, at most, while running


@dataclass(frozen=True)
class Line:
    """One request of a batch."""

    number: int  # 1-based line of the input file
    custom_id: str
    url: str
    body: dict[str, Any]

    def group(self) -> tuple[str, str]:
        """What lines sharing a prefix have in common: the model and the first message."""
        messages = self.body.get("messages") or [self.body.get("prompt")]
        return str(self.body.get("model")), json.dumps(messages[0] if messages else None)


@dataclass(frozen=True)
class BadLine:
    """An input line that is not a request: the validation error OpenAI's `errors.data` holds."""

    number: int
    code: str
    message: str
    param: str | None = None

    def error(self) -> dict[str, Any]:
        """The entry of `errors.data`."""
        return {"code": self.code, "message": self.message, "param": self.param,
                "line": self.number}  # fmt: skip


def read(path: Path, endpoint: str | None) -> Iterator[Line | BadLine]:
    """Every non-blank line of `path`, parsed; `endpoint` is the url every line must name
    (None: either of `ENDPOINTS`). Duplicate custom_ids are the caller's to find."""
    with path.open("rb") as source:
        for number, raw in enumerate(source, start=1):
            if raw.strip():
                yield parse(number, raw, endpoint)


def parse(number: int, raw: bytes, endpoint: str | None) -> Line | BadLine:
    """One input line, or what is wrong with it."""
    try:
        item = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return BadLine(number, "invalid_json_line", "This line is not valid JSON.")
    problem = _problem(item, endpoint)
    if problem is not None:
        return BadLine(number, "invalid_request", problem[1], problem[0])
    return Line(number, item["custom_id"], item["url"], item["body"])


def _problem(item: Any, endpoint: str | None) -> tuple[str, str] | None:
    """(param, message) of what is wrong with a parsed input line, or None."""
    if not isinstance(item, dict):
        return "line", "A line must be a JSON object with custom_id, method, url and body."
    if not isinstance(item.get("custom_id"), str) or not item["custom_id"]:
        return "custom_id", "'custom_id' must be a non-empty string."
    if item.get("method") != "POST":
        return "method", f"'method' is {item.get('method')!r}; only 'POST' is supported."
    if endpoint is not None and item.get("url") != endpoint:
        return "url", f"'url' is {item.get('url')!r}; this batch's endpoint is {endpoint!r}."
    if item.get("url") not in ENDPOINTS:
        return "url", f"'url' is {item.get('url')!r}; it must be one of {', '.join(ENDPOINTS)}."
    if not isinstance(item.get("body"), dict):
        return "body", "'body' must be a JSON object: the request for the endpoint."
    if item["body"].get("stream"):
        return "body.stream", "'body.stream' must be false: a batch's results are collected."
    unknown = set(item) - {"custom_id", "method", "url", "body"}
    if unknown:
        return sorted(unknown)[0], f"Unknown field {sorted(unknown)[0]!r} in the line."
    return None


def grouped(lines: Iterable[Line]) -> Iterator[Line]:
    """`lines` reordered so that lines sharing a prefix run together, `GROUP_WINDOW` at a time
    (so memory stays bounded however long the file)."""
    source = iter(lines)
    while window := list(islice(source, GROUP_WINDOW)):
        for _, same in groupby(sorted(window, key=Line.group), key=Line.group):
            yield from same


def result(custom_id: str, status: int, body: dict[str, Any]) -> dict[str, Any]:
    """The output (or error) line of a request the route answered with `status` and `body`."""
    return {
        "id": f"batch_req_{secrets.token_hex(12)}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": body.get("id"), "body": body},
        "error": None,
    }


def not_run(custom_id: str, code: str, message: str) -> dict[str, Any]:
    """The error line of a request that was never run (e.g. `batch_expired`)."""
    return {"id": None, "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}  # fmt: skip


def usage_of(row: dict[str, Any]) -> dict[str, int]:
    """The token usage of a result line (empty when it has none)."""
    response = row.get("response") or {}
    return (response.get("body") or {}).get("usage") or {}


def append(out: IO[str], rows: Iterable[dict[str, Any]]) -> None:
    """Append result lines and make them durable before returning: one fsync for all (an fsync
    per line would cap a fast engine's lines/s at the disk's syncs/s)."""
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    if text:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())


def written(path: Path) -> Iterator[dict[str, Any]]:
    """The result lines in `path`; a half-written last line (a crash mid-append) is cut off."""
    if not path.is_file():
        return
    with path.open("r+b") as rows:
        complete = 0
        for row in rows:
            if not row.endswith(b"\n"):
                rows.truncate(complete)
                return
            complete += len(row)
            if row.strip():
                yield json.loads(row)


def written_ids(*paths: Path) -> set[str]:
    """custom_ids whose results are in any of `paths`."""
    return {row["custom_id"] for path in paths for row in written(path)}
