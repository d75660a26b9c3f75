"""The load generator's SSE reading, token counting and workload shapes."""

import asyncio
import json

import pytest

from scripts.loadgen import (
    RequestRecord,
    StreamReading,
    Workload,
    _count,
    http_error_kind,
    read_sse_line,
    run_workload,
)


def _data(obj: object) -> str:
    return "data: " + json.dumps(obj) + "\n"


def test_reads_openai_chat_stream_with_heartbeats_and_crlf() -> None:
    reading = StreamReading()
    lines = [
        ": ping - 2026-11-27 10:00:00\r\n",
        "\r\n",
        _data({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
        _data({"choices": [{"index": 0, "delta": {"content": "Hel"}}]}).replace("\n", "\r\n"),
        "event: message\n",
        _data({"choices": [{"index": 0, "delta": {"content": "lo"}}]}),
        _data({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}),
        _data({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}),
        "data: [DONE]\n",
    ]
    carried = [read_sse_line(line, reading) for line in lines]
    assert carried == [False, False, False, True, False, True, False, False, False]
    assert "".join(reading.text) == "Hello"
    assert reading.usage_tokens == 2
    assert reading.done
    assert reading.error is None


def test_reads_text_completion_chunks_and_data_without_space() -> None:
    reading = StreamReading()
    read_sse_line('data:{"choices": [{"index": 0, "text": "abc"}]}', reading)
    assert reading.text == ["abc"]


def test_error_event_is_recorded() -> None:
    reading = StreamReading()
    read_sse_line(_data({"error": {"message": "engine died", "type": "server_error"}}), reading)
    assert reading.error == "engine died"
    assert reading.error_code == "server_error"  # the type, when there is no code
    error = {"message": "too slow", "type": "timeout_error", "code": "request_timeout"}
    read_sse_line(_data({"error": error}), reading)
    assert reading.error_code == "request_timeout"


@pytest.mark.parametrize(
    ("status", "text", "kind"),
    [
        (
            429,
            '{"error": {"message": "m", "type": "tokens", "code": "rate_limit_exceeded"}}',
            "429 rate_limit_exceeded",
        ),
        (
            400,
            '{"error": {"message": "m", "type": "invalid_request_error", "code": null}}',
            "400 invalid_request_error",
        ),
        (502, "<html>Bad Gateway</html>", "502"),  # a proxy's page, not the envelope
        (500, '{"detail": "x"}', "500"),
        (503, '["error"]', "503"),
    ],
)
def test_http_errors_are_kinds_of_status_and_code(status: int, text: str, kind: str) -> None:
    assert http_error_kind(status, text) == kind


def _reading(text: str, usage: int | None) -> StreamReading:
    return StreamReading(text=[text], usage_tokens=usage, done=True)


def test_usage_wins_over_the_fallback_counter() -> None:
    record = RequestRecord(start=0.0)
    _count(record, _reading("a b c", usage=7), ("words", lambda t: len(t.split())))
    assert (record.output_tokens, record.token_source) == (7, "usage")


def test_fallback_counter_counts_the_streamed_text() -> None:
    record = RequestRecord(start=0.0)
    _count(record, _reading("a b c", usage=None), ("words", lambda t: len(t.split())))
    assert (record.output_tokens, record.token_source) == (3, "words")
    record = RequestRecord(start=0.0)
    _count(record, StreamReading(text=["a", "b"], done=True), None)
    assert (record.output_tokens, record.token_source) == (2, "chunks")


def test_prompts_are_distinct_and_seeded() -> None:
    w = Workload(num_requests=20, prompt_words=10, seed=3)
    prompts = w.prompts()
    assert len(set(prompts)) == 20
    assert prompts == Workload(num_requests=20, prompt_words=10, seed=3).prompts()
    assert all(len(p.split()) == 10 for p in prompts)


def test_poisson_gaps_have_the_requested_rate() -> None:
    gaps = Workload(num_requests=4000, request_rate=50.0, seed=1).arrival_gaps()
    assert sum(gaps) / len(gaps) == pytest.approx(1 / 50, rel=0.1)
    assert Workload(num_requests=3).arrival_gaps() == [0.0, 0.0, 0.0]


def test_concurrency_is_never_exceeded() -> None:
    in_flight, peak, sent = 0, 0, 0

    async def send(prompt: str) -> RequestRecord:
        nonlocal in_flight, peak, sent
        sent += 1
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.001)
        in_flight -= 1
        return RequestRecord(start=0.0, ok=True, end=0.001)

    done = []
    records, duration = asyncio.run(
        run_workload(send, Workload(40, concurrency=5, warmup_requests=2), lambda: done.append(1))
    )
    assert len(records) == 40
    assert len(done) == 40  # progress counts measured requests, not the warm-up
    assert sent == 40 + 5  # the warm-up runs at the measured concurrency
    assert peak == 5
    assert duration > 0


def test_content_marks_give_ttft_then_gaps() -> None:
    record = RequestRecord(start=0.0)
    for _ in range(3):
        record.mark_content()
    assert record.ttft is not None
    assert record.ttft > 0
    assert len(record.chunk_gaps) == 2
    assert all(gap >= 0 for gap in record.chunk_gaps)
