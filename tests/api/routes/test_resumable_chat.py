"""Resumable chat streams (`X-Resumable: true`) on the fake engine (fast): framing with `id:`
lines, the resume route, ownership, bad headers; a plain stream is unchanged. On the real
engine, with dropped connections and official clients: tests/api/clients/test_resumable.py."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeEngine, fake_client

BODY = {"model": "fake", "messages": [{"role": "user", "content": "hi"}], "stream": True}
A = {"authorization": "Bearer key-a"}
B = {"authorization": "Bearer key-b"}


@pytest.fixture
def http() -> Iterator[TestClient]:
    with fake_client(FakeEngine(), api_keys="key-a,key-b", admin_key="admin-key") as client:
        yield client


def _events(text: str) -> list[tuple[str | None, str]]:
    """(id, data) of each event; a comment block (heartbeat) is no event."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(
            line.split(": ", 1) for line in block.splitlines() if not line.startswith(":")
        )
        if fields:
            events.append((fields.get("id"), fields["data"]))
    return events


def test_an_opted_in_stream_numbers_its_events_and_can_be_replayed(http: TestClient) -> None:
    answer = http.post("/v1/chat/completions", json=BODY, headers=A | {"X-Resumable": "true"})
    assert answer.status_code == 200
    stream_id = answer.headers["x-resumable-id"]
    events = _events(answer.text)
    assert [event_id for event_id, _ in events] == [str(i) for i in range(len(events))]
    assert events[-1][1] == "[DONE]"
    chunks = [json.loads(data) for _, data in events[:-1]]
    assert {chunk["id"] for chunk in chunks} == {stream_id}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "one two three"
    # Replayed after event 2, as a client that saw events 0-2 asks for the rest.
    again = http.get(f"/v1/chat/completions/{stream_id}/stream", headers=A | {"Last-Event-ID": "2"})
    assert _events(again.text) == events[3:]
    assert http.get(f"/v1/chat/completions/{stream_id}/stream", headers=A).text == answer.text
    done = http.post(f"/v1/chat/completions/{stream_id}/cancel", headers=A).json()
    assert done == {"id": stream_id, "object": "chat.completion.stream", "status": "completed"}


def test_a_plain_stream_has_no_ids(http: TestClient) -> None:
    answer = http.post("/v1/chat/completions", json=BODY, headers=A)
    assert "x-resumable-id" not in answer.headers
    assert all(event_id is None for event_id, _ in _events(answer.text))


def test_another_key_cannot_resume_or_stop_a_stream(http: TestClient) -> None:
    answer = http.post("/v1/chat/completions", json=BODY, headers=A | {"X-Resumable": "true"})
    stream_id = answer.headers["x-resumable-id"]
    assert http.get(f"/v1/chat/completions/{stream_id}/stream", headers=B).status_code == 404
    assert http.post(f"/v1/chat/completions/{stream_id}/cancel", headers=B).status_code == 404
    admin = {"authorization": "Bearer admin-key"}
    assert http.get(f"/v1/chat/completions/{stream_id}/stream", headers=admin).status_code == 200
    missing = http.get("/v1/chat/completions/chatcmpl-nope/stream", headers=A)
    assert missing.status_code == 404
    assert missing.json()["error"]["param"] == "completion_id"


@pytest.mark.parametrize(
    ("body", "headers", "param"),
    [
        (BODY, {"X-Resumable": "yes"}, "X-Resumable"),
        (BODY | {"stream": False}, {"X-Resumable": "true"}, "stream"),
    ],
)
def test_bad_resumable_requests_are_refused(
    http: TestClient, body: dict[str, Any], headers: dict[str, str], param: str
) -> None:
    answer = http.post("/v1/chat/completions", json=body, headers=A | headers)
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == param


def test_a_bad_last_event_id_is_refused(http: TestClient) -> None:
    answer = http.post("/v1/chat/completions", json=BODY, headers=A | {"X-Resumable": "true"})
    stream_id = answer.headers["x-resumable-id"]
    again = http.get(
        f"/v1/chat/completions/{stream_id}/stream", headers=A | {"Last-Event-ID": "three"}
    )
    assert again.status_code == 400
    assert again.json()["error"]["param"] == "Last-Event-ID"
