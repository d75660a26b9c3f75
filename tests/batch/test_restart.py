"""A batch on the real engine survives its server draining (SIGTERM: the lines in flight finish
and are written) and being SIGKILLed: each restarted server resumes it, and every line ends in
the output exactly once. A stored response survives the kill too: its object, its input, its
events, and its conversation, which goes on."""

import io
import json
import re
import signal
import time
from pathlib import Path

import openai
import psutil

from tests.conftest import LONG, MODEL, running_server

LINES = 24


def test_a_batch_survives_a_drain_and_a_kill_and_runs_each_line_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    args = ["--data-dir", str(data_dir), "--kv-cache-gib", "1", "--enforce-eager"]
    args += ["--max-model-len", "2048", "--batch-concurrency", "2", "--drain-timeout-s", "60"]
    body = {**LONG, "max_tokens": 128, "model": MODEL}
    data = b"".join(
        json.dumps(
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        ).encode()
        + b"\n"
        for i in range(LINES)
    )
    with running_server(tmp_path, args) as first:
        client = openai.OpenAI(base_url=f"{first.url}/v1", api_key="unused", max_retries=0)
        upload = client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        batch = client.batches.create(
            input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while first.engine_load()["num_running_requests"] < 2:
            time.sleep(0.05)
        before = client.batches.retrieve(batch.id).request_counts.completed
        # A graceful stop (SIGTERM): the lines in flight finish and are written; no new one starts.
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(timeout=90) == 0
        (in_flight,) = re.findall(r"Draining: (\d+) request", first.log())
    written = (data_dir / "batches" / batch.id / "output.jsonl").read_text().splitlines()
    assert int(in_flight) >= 1
    assert len(written) >= before + int(in_flight)
    assert len(written) < LINES

    with running_server(tmp_path, args) as second:
        client = openai.OpenAI(base_url=f"{second.url}/v1", api_key="unused", max_retries=0)
        stored = client.responses.create(model=MODEL, input="Hi", temperature=0)
        while client.batches.retrieve(batch.id).request_counts.completed < len(written) + 2:
            time.sleep(0.05)
        # The machine dies: the server and its engine processes, with no chance to clean up.
        tree = psutil.Process(second.process.pid)
        for process in [tree, *tree.children(recursive=True)]:
            process.kill()
        second.process.wait(timeout=30)
    with running_server(tmp_path, args) as third:
        client = openai.OpenAI(base_url=f"{third.url}/v1", api_key="unused", max_retries=0)
        deadline = time.monotonic() + 240
        while (resumed := client.batches.retrieve(batch.id)).status != "completed":
            assert time.monotonic() < deadline, resumed
            time.sleep(0.2)
        rows = client.files.content(resumed.output_file_id or "").text.splitlines()
        ids = [json.loads(row)["custom_id"] for row in rows]
        assert sorted(ids) == sorted(f"r{i}" for i in range(LINES))  # none lost, none twice
        assert resumed.request_counts.model_dump() == {
            "total": LINES,
            "completed": LINES,
            "failed": 0,
        }
        assert resumed.error_file_id is None
        assert client.responses.retrieve(stored.id).model_dump() == stored.model_dump()
        events = list(client.responses.retrieve(stored.id, stream=True))
        assert events[-1].type == "response.completed"
        assert [e.sequence_number for e in events] == list(range(len(events)))
        assert len(client.responses.input_items.list(stored.id).data) == 1
        follow_up = client.responses.create(
            model=MODEL, input="Hi", temperature=0, previous_response_id=stored.id
        )
        assert follow_up.usage is not None
        assert stored.usage is not None
        assert follow_up.usage.input_tokens > stored.usage.input_tokens + stored.usage.output_tokens
