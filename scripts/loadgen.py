"""Load generator for any OpenAI-compatible server: streamed chat completions, timed per chunk.

Requests go out at a fixed concurrency or as Poisson arrivals at a request rate. Every request
records when it started, when its first content arrived (TTFT), the gaps between content chunks
(inter-token latency), when it ended, and how many tokens it produced.
"""

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp

# Words that the demo tokenizer keeps whole, so a prompt of N words is about N tokens.
_WORDS = (
    "the a kangaroo hops over field river stone tree sky sun moon star red green blue small "
    "large quick slow bright dark warm cold one two three four five hello world model server"
).split()


@dataclass(frozen=True)
class Workload:
    """What to send: how many requests, how long, at what concurrency or rate."""

    num_requests: int
    prompt_words: int = 64
    output_tokens: int = 128
    concurrency: int = 1  # most requests in flight at once
    request_rate: float | None = None  # Poisson arrivals per second; None = all at once
    warmup_requests: int = 4
    seed: int = 0
    temperature: float = 0.0

    def prompts(self) -> list[str]:
        """The request prompts: distinct (no prefix-cache hits across requests), seeded."""
        rng = random.Random(self.seed)
        return [
            " ".join(rng.choice(_WORDS) for _ in range(self.prompt_words))
            for _ in range(self.num_requests)
        ]

    def arrival_gaps(self) -> list[float]:
        """Seconds to wait before each request: exponential gaps, or none for a closed loop."""
        if self.request_rate is None:
            return [0.0] * self.num_requests
        rng = random.Random(self.seed + 1)
        return [rng.expovariate(self.request_rate) for _ in range(self.num_requests)]


@dataclass
class RequestRecord:
    """The timings of one request (seconds, from `time.perf_counter`)."""

    start: float
    ok: bool = False
    first_token_at: float | None = None
    end: float = 0.0
    chunk_gaps: list[float] = field(default_factory=list)
    output_tokens: int = 0
    token_source: str = "usage"  # "usage", or the fallback counter's name
    error: str | None = None
    error_kind: str | None = None  # what kind of error, for counting: see `http_error_kind`
    last_content_at: float = 0.0

    def mark_content(self) -> None:
        """Note that content arrived now: the first sets TTFT, each later one adds a gap."""
        now = time.perf_counter()
        if self.first_token_at is None:
            self.first_token_at = now
        else:
            self.chunk_gaps.append(now - self.last_content_at)
        self.last_content_at = now

    @property
    def ttft(self) -> float | None:
        """Time to first content token."""
        return None if self.first_token_at is None else self.first_token_at - self.start

    @property
    def latency(self) -> float:
        """End-to-end time of the request."""
        return self.end - self.start


@dataclass
class StreamReading:
    """What one streamed response said, built line by line by `read_sse_line`."""

    text: list[str] = field(default_factory=list)
    usage_tokens: int | None = None
    done: bool = False
    error: str | None = None
    error_code: str | None = None  # the error event's code (or type)


def read_sse_line(line: str, reading: StreamReading) -> bool:
    """Take one SSE line into `reading`; True when it carried new output text (content, or
    tool-call arguments).

    Comments (heartbeats), blank separators and other fields are skipped; an `error` object is
    recorded; `data: [DONE]` ends the stream.
    """
    line = line.rstrip("\r\n")
    if not line.startswith("data:"):
        return False
    data = line[5:].lstrip(" ")
    if data == "[DONE]":
        reading.done = True
        return False
    chunk = json.loads(data)
    if "error" in chunk:
        reading.error = chunk["error"].get("message", "error")
        reading.error_code = chunk["error"].get("code") or chunk["error"].get("type")
        return False
    if chunk.get("usage"):
        reading.usage_tokens = chunk["usage"]["completion_tokens"]
    new_text = False
    for choice in chunk.get("choices", ()):
        delta = choice.get("delta") or {}
        # Tool-call argument text is output too (a tool call's first delta has none).
        calls = "".join(
            (c.get("function") or {}).get("arguments") or "" for c in delta.get("tool_calls") or ()
        )
        content = delta.get("content") or choice.get("text") or calls
        if content:
            reading.text.append(content)
            new_text = True
    return new_text


TokenCounter = Callable[[str], int]
Sender = Callable[[str], Awaitable[RequestRecord]]


async def run_workload(
    send: Sender, workload: Workload, on_done: Callable[[], None] | None = None
) -> tuple[list[RequestRecord], float]:
    """Send the workload's prompts through `send`, at its concurrency and arrival times.

    Warm-up requests go first, at the same concurrency, and are not recorded: the engine's
    first batches of a new size are slow (compilation), and that is not what is measured.
    Returns the records and the wall time the measured requests took.
    """
    warmup = Workload(
        max(workload.warmup_requests, workload.concurrency),
        workload.prompt_words,
        concurrency=workload.concurrency,
        seed=-1,
    )
    await _drive(send, warmup, None)
    started = time.perf_counter()
    records = await _drive(send, workload, on_done)
    return records, time.perf_counter() - started


async def _drive(
    send: Sender, workload: Workload, on_done: Callable[[], None] | None
) -> list[RequestRecord]:
    limit = asyncio.Semaphore(workload.concurrency)

    async def one(prompt: str) -> RequestRecord:
        async with limit:
            record = await send(prompt)
        if on_done:
            on_done()
        return record

    tasks = []
    for prompt, gap in zip(workload.prompts(), workload.arrival_gaps(), strict=True):
        if gap:
            await asyncio.sleep(gap)
        tasks.append(asyncio.create_task(one(prompt)))
    return list(await asyncio.gather(*tasks))


@contextlib.asynccontextmanager
async def http_sender(
    base_url: str,
    model: str,
    workload: Workload,
    count_tokens: tuple[str, TokenCounter] | None = None,
    api_key: str | None = None,
) -> AsyncIterator[Sender]:
    """A sender that streams chat completions from an OpenAI-compatible server.

    Output tokens come from the usage chunk; `count_tokens` (name, counter) counts the streamed
    text for servers that send no usage. `api_key` is sent as a Bearer token.
    """
    async with client_session(api_key) as session:

        async def send(prompt: str) -> RequestRecord:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": prompt}],
                "max_tokens": workload.output_tokens,
                "temperature": workload.temperature,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            return await stream_chat(session, base_url, body, count_tokens)

        yield send


def client_session(api_key: str | None) -> aiohttp.ClientSession:
    """An HTTP session for many concurrent long streams, sending `api_key` as a Bearer token."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else None
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None, sock_read=600),
        headers=headers,
    )


async def stream_chat(
    session: aiohttp.ClientSession,
    base_url: str,
    body: dict[str, Any],
    count_tokens: tuple[str, TokenCounter] | None = None,
    headers: dict[str, str] | None = None,
) -> RequestRecord:
    """Stream one chat completion (`body` asks for a stream) and time its content chunks."""
    record = RequestRecord(start=time.perf_counter())
    reading = StreamReading()
    try:
        url = f"{base_url}/chat/completions"
        async with session.post(url, json=body, headers=headers) as response:
            if response.status != 200:
                text = await response.text()
                record.error = f"HTTP {response.status}: {text[:200]}"
                record.error_kind = http_error_kind(response.status, text)
                return record
            async for raw in response.content:
                if read_sse_line(raw.decode(), reading):
                    record.mark_content()
    except (TimeoutError, aiohttp.ClientError) as exc:
        record.error = f"{type(exc).__name__}: {exc}"
        record.error_kind = type(exc).__name__
        return record
    finally:
        record.end = time.perf_counter()
    record.error = reading.error or (None if reading.done else "stream ended without [DONE]")
    if reading.error is not None:
        record.error_kind = f"stream error {reading.error_code}"
    elif not reading.done:
        record.error_kind = "stream cut short"
    record.ok = record.error is None
    _count(record, reading, count_tokens)
    return record


def http_error_kind(status: int, text: str) -> str:
    """`status` and the code of OpenAI's error envelope in `text` ("429 rate_limit_exceeded"),
    or the status alone when the body is not such an envelope."""
    try:
        error = json.loads(text)["error"]
        code = error.get("code") or error.get("type")
    except (ValueError, KeyError, TypeError, AttributeError):
        code = None
    return f"{status} {code}" if code else str(status)


def _count(
    record: RequestRecord, reading: StreamReading, count_tokens: tuple[str, TokenCounter] | None
) -> None:
    if reading.usage_tokens is not None:
        record.output_tokens = reading.usage_tokens
    elif count_tokens is not None:
        record.token_source, counter = count_tokens
        record.output_tokens = counter("".join(reading.text))
    else:
        record.token_source = "chunks"
        record.output_tokens = len(reading.text)


def token_sources(records: Iterable[RequestRecord]) -> set[str]:
    """How the output tokens of these records were counted."""
    return {r.token_source for r in records if r.ok}


def as_dict(record: RequestRecord) -> dict[str, Any]:
    """A record as JSON-ready data."""
    return {
        "ok": record.ok,
        "ttft": record.ttft,
        "latency": record.latency,
        "output_tokens": record.output_tokens,
        "error": record.error,
    }
