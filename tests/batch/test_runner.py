"""The batch runner on its own (no HTTP): resuming after a crash runs each line exactly once,
a half-written result is cut off, and a lease keeps two processes off one batch."""

import asyncio
import json
from pathlib import Path
from typing import Any

from server.batch.files import FileStore
from server.batch.jobs import Batch, BatchStore
from server.batch.pacing import Pacer
from server.batch.runner import BatchRunner
from tests.batch.stored import stored_batch


class Recorder:
    """An `execute` that answers 200 and records which prompts it was sent."""

    def __init__(self) -> None:
        self.prompts: list[str] = []

    async def __call__(
        self, owner: str, url: str, body: dict[str, Any], gone: asyncio.Event
    ) -> tuple[int, dict]:
        self.prompts.append(body["prompt"])
        usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
        return 200, {"id": "cmpl-1", "object": "text_completion", "usage": usage}


async def _run_until_ended(runner: BatchRunner, batches: BatchStore, batch_id: str) -> Batch:
    task = asyncio.create_task(runner.run_forever())
    for _ in range(500):
        batch = batches.get(batch_id, None)
        if batch.status == "completed":
            break
        await asyncio.sleep(0.02)
    await runner.stop()
    task.cancel()
    return batches.get(batch_id, None)


def test_a_resumed_batch_runs_only_the_lines_not_written(tmp_path: Path) -> None:
    files, batches, batch = stored_batch(tmp_path, 10)

    def started(stored: Batch) -> Batch:
        stored.counts["total"] = 10
        return stored.moved("in_progress")

    batches.update(batch.id, started)
    # A previous process wrote four results, the last one cut off by the crash.
    work = tmp_path / "batches" / batch.id
    work.mkdir(parents=True)
    written = [{"id": "x", "custom_id": f"r{i}", "response": {"status_code": 200, "body": {}},
                "error": None} for i in range(4)]  # fmt: skip
    text = "".join(json.dumps(row) + "\n" for row in written)
    (work / "output.jsonl").write_text(text[: -len(json.dumps(written[-1])) // 2 - 1])
    recorder = Recorder()
    runner = BatchRunner(batches, files, recorder, Pacer(4, lambda: None), max_lines=100)
    ended = asyncio.run(_run_until_ended(runner, batches, batch.id))
    assert ended.status == "completed"
    # Counted from what was written: the 3 whole lines of the crashed run, 7 of this one.
    assert ended.counts == {"total": 10, "completed": 10, "failed": 0}
    assert ended.usage["total_tokens"] == 7 * 3
    assert sorted(recorder.prompts) == sorted(f"p{i}" for i in range(3, 10))
    assert ended.output_file_id is not None
    rows = files.path(files.get(ended.output_file_id, "k")).read_text().splitlines()
    ids = [json.loads(row)["custom_id"] for row in rows]
    assert sorted(ids) == sorted(f"r{i}" for i in range(10))  # each once, none lost
    assert not work.exists()


def test_a_lease_keeps_a_second_process_off_a_running_batch(tmp_path: Path) -> None:
    _, batches, batch = stored_batch(tmp_path, 1)
    assert [b.id for b in batches.claim("first", lease_s=60)] == [batch.id]
    assert batches.claim("second", lease_s=60) == []
    assert [b.id for b in batches.claim("first", lease_s=60)] == [batch.id]  # renewed
    batches.release(batch.id, "first")
    assert [b.id for b in batches.claim("second", lease_s=60)] == [batch.id]
    # A lease that ran out (its process died) is taken over.
    assert [b.id for b in batches.claim("third", lease_s=-1)] == []
    _, other, late = stored_batch(tmp_path / "b", 1)
    other.claim("dead", lease_s=-1)
    assert [b.id for b in other.claim("alive", lease_s=60)] == [late.id]


def test_stop_gives_the_leases_up(tmp_path: Path) -> None:
    files, batches, batch = stored_batch(tmp_path, 3)
    batches.update(batch.id, lambda b: b.moved("in_progress"))

    async def run_then_stop() -> None:
        started = asyncio.Event()

        async def never(
            owner: str, url: str, body: dict[str, Any], gone: asyncio.Event
        ) -> tuple[int, dict]:
            started.set()
            await asyncio.Event().wait()  # a line that would run for ever
            raise AssertionError

        runner = BatchRunner(batches, files, never, Pacer(2, lambda: None), max_lines=100)
        task = asyncio.create_task(runner.run_forever())
        await started.wait()
        await runner.stop()
        task.cancel()

    asyncio.run(run_then_stop())
    assert [b.id for b in batches.claim("next process", lease_s=15)] == [batch.id]


def test_a_batch_whose_input_file_is_gone_fails_and_keeps_its_results(tmp_path: Path) -> None:
    files, batches, batch = stored_batch(tmp_path, 6)
    batches.update(batch.id, lambda b: b.moved("in_progress"))
    work = tmp_path / "batches" / batch.id
    work.mkdir(parents=True)
    row = {"id": "x", "custom_id": "r0", "response": {"status_code": 200, "body": {}}}
    (work / "output.jsonl").write_text(json.dumps(row | {"error": None}) + "\n")
    files.delete(batch.input_file_id, None)  # deleted before the batch resumed
    ended = asyncio.run(_run_until(files, batches, batch.id, "failed"))
    assert ended.status == "failed"
    assert ended.errors[0]["code"] == "input_file_missing"
    assert ended.output_file_id is not None  # the line that ran is kept


async def _run_until(files: FileStore, batches: BatchStore, batch_id: str, status: str) -> Batch:
    runner = BatchRunner(batches, files, Recorder(), Pacer(1, lambda: None), max_lines=100)
    task = asyncio.create_task(runner.run_forever())
    for _ in range(300):
        if batches.get(batch_id, None).status == status:
            break
        await asyncio.sleep(0.02)
    await runner.stop()
    task.cancel()
    return batches.get(batch_id, None)
