"""Runs batches: validates the input file, sends each line through the live route, appends each
result to a work file, and at the end turns the work files into the output and error files.

Exactly once: a line's result is appended (and flushed to disk) as soon as it is known, and a
batch that resumes (after a restart, a crash, or on another process once the lease ran out)
skips every custom_id already written; a line in flight when the process died is run again,
since its result was never written. A half-written last line (a crash mid-append) is cut off.
Lines are run grouped by model and first message, so that the prefix cache and LoRA slots are
reused; a line refused for a reason that passes (429, 503) is retried later, not failed.
"""

import asyncio
import hashlib
import json
import logging
import os
import secrets
import shutil
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from server.batch.files import FileStore
from server.batch.jobs import OPEN, Batch, BatchStore
from server.errors import NotFoundError

logger = logging.getLogger(__name__)

# (owner key id, url, body) -> (HTTP status, JSON body) of the live route.
Execute = Callable[[str, str, dict[str, Any]], Awaitable[tuple[int, dict[str, Any]]]]
RETRY_STATUSES = (408, 429, 503)
LEASE_S = 15.0  # another process takes over a batch this long after its runner died
POLL_S = 1.0
RETRY_S = 1.0


@dataclass(frozen=True)
class Line:
    """One request of a batch."""

    number: int  # 1-based line of the input file
    custom_id: str
    body: dict[str, Any]

    def group(self) -> tuple[str, str]:
        """What lines sharing a prefix have in common: the model and the first message."""
        messages = self.body.get("messages") or [self.body.get("prompt")]
        return str(self.body.get("model")), json.dumps(messages[0] if messages else None)


class BatchRunner:
    """Claims open batches and runs them, `concurrency` lines at a time per process."""

    def __init__(
        self,
        batches: BatchStore,
        files: FileStore,
        execute: Execute,
        concurrency: int,
        max_lines: int,
    ):
        self.batches, self.files, self.execute = batches, files, execute
        self.max_lines = max_lines
        self.name = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # this process, in leases
        self.work = files.root / "batches"
        self._slots = asyncio.Semaphore(concurrency)
        self._running: dict[str, asyncio.Task[None]] = {}
        self._stopping = False

    async def run_forever(self) -> None:
        """Claim and run batches until `stop`; renews the leases of those it runs."""
        while not self._stopping:
            for batch in await asyncio.to_thread(self.batches.claim, self.name, LEASE_S):
                if batch.id not in self._running:
                    task = asyncio.create_task(self._run(batch.id))
                    self._running[batch.id] = task
                    task.add_done_callback(partial(self._forget, batch.id))
            await asyncio.sleep(POLL_S)

    def _forget(self, batch_id: str, _: object) -> None:
        self._running.pop(batch_id, None)

    async def stop(self) -> None:
        """Start no new line; lines in flight finish, or are run again by whoever resumes."""
        self._stopping = True
        running = dict(self._running)  # the tasks forget themselves as they end
        for task in running.values():
            task.cancel()
        await asyncio.gather(*running.values(), return_exceptions=True)
        for batch_id in running:
            self.batches.release(batch_id, self.name)  # another process may resume it now

    async def _run(self, batch_id: str) -> None:
        try:
            batch = self.batches.get(batch_id, None)
            if batch.status == "validating":
                batch = await asyncio.to_thread(self._validate, batch)
            if batch.status in ("in_progress", "cancelling", "finalizing"):
                ending = await self._run_lines(batch)
                await asyncio.to_thread(self._finalize, batch, ending)
            self.batches.release(batch_id, self.name)
        except asyncio.CancelledError:
            raise
        except NotFoundError as exc:  # its input file was deleted: it cannot go on
            await asyncio.to_thread(self._fail, batch_id, exc)
        except Exception:
            logger.exception("Batch %s stopped by an error; it resumes at the next claim", batch_id)

    def _fail(self, batch_id: str, exc: NotFoundError) -> None:
        """End a batch whose input file is gone; the lines it finished are kept."""
        error = {"code": "input_file_missing", "message": exc.message, "param": "input_file_id",
                 "line": None}  # fmt: skip

        def failed(stored: Batch) -> Batch:
            stored.errors = [error]
            return stored

        batch = self.batches.update(batch_id, failed)
        self._finalize(batch, "failed")
        self.batches.release(batch_id, self.name)

    def _validate(self, batch: Batch) -> Batch:
        lines, errors = read_lines(self.files, batch, self.max_lines)

        def validated(stored: Batch) -> Batch:
            if stored.status != "validating":
                return stored  # cancelled meanwhile
            if errors:
                stored = stored.moved("failed")
                stored.errors = errors
                return stored
            stored = stored.moved("in_progress")
            stored.counts = {"total": len(lines), "completed": 0, "failed": 0}
            return stored

        return self.batches.update(batch.id, validated)

    async def _run_lines(self, batch: Batch) -> str:
        """Run every line not written yet; the status the batch ends in."""
        lines, _ = read_lines(self.files, batch, self.max_lines)
        folder = self.work / batch.id
        folder.mkdir(parents=True, exist_ok=True)
        done = _written_ids(folder / "output.jsonl") | _written_ids(folder / "errors.jsonl")
        if done:  # resuming: count from what was written (a crash may have come in between)
            self.batches.update(batch.id, partial(_tally, folder))
        pending = sorted((line for line in lines if line.custom_id not in done), key=Line.group)
        with (
            (folder / "output.jsonl").open("a", encoding="utf-8") as output,
            (folder / "errors.jsonl").open("a", encoding="utf-8") as errors,
        ):
            await asyncio.gather(*(self._run_line(batch.id, x, output, errors) for x in pending))
            stored = self.batches.get(batch.id, None)
            if stored.status == "cancelling":
                return "cancelled"
            if time.time() >= stored.expires_at and self._write_expired(batch, lines, errors):
                return "expired"
        self.batches.update(
            batch.id, lambda b: b.moved("finalizing") if b.status == "in_progress" else b
        )
        return "completed"

    async def _run_line(self, batch_id: str, line: Line, output: Any, errors: Any) -> None:
        async with self._slots:
            while True:
                batch = await asyncio.to_thread(self.batches.get, batch_id, None)
                if batch.status != "in_progress" or time.time() >= batch.expires_at:
                    return  # cancelled or expired: the line is not run
                status, body = await self.execute(batch.owner, batch.endpoint, line.body)
                if status not in RETRY_STATUSES:
                    break
                await asyncio.sleep(RETRY_S)
        result = {
            "id": f"batch_req_{secrets.token_hex(12)}",
            "custom_id": line.custom_id,
            "response": {"status_code": status, "request_id": body.get("id"), "body": body},
            "error": None,
        }
        _append(output if status == 200 else errors, result)
        usage = body.get("usage") or {}

        def counted(stored: Batch) -> Batch:
            stored.counts["completed" if status == 200 else "failed"] += 1
            _add_usage(stored, usage)
            return stored

        self.batches.update(batch_id, counted)

    def _write_expired(self, batch: Batch, lines: list[Line], errors: Any) -> bool:
        """An error line `batch_expired` for every line not run; whether there was one."""
        folder = self.work / batch.id
        done = _written_ids(folder / "output.jsonl") | _written_ids(folder / "errors.jsonl")
        message = "This request could not be executed before the completion window expired."
        left = [line for line in lines if line.custom_id not in done]
        for line in left:
            error = {"code": "batch_expired", "message": message}
            result = {"id": None, "custom_id": line.custom_id, "response": None}
            _append(errors, result | {"error": error})
        return bool(left)

    def _finalize(self, batch: Batch, ending: str) -> None:
        """Turn the work files into the output and error files, and end the batch in `ending`.

        The files' ids come from the batch's: done twice (a crash in between), it stores them
        once.
        """
        folder = self.work / batch.id
        ids: dict[str, str] = {}
        for name, attribute in (
            ("output.jsonl", "output_file_id"),
            ("errors.jsonl", "error_file_id"),
        ):
            path = folder / name
            if path.is_file() and path.stat().st_size > 0:
                file_id = f"file-{hashlib.sha256((batch.id + name).encode()).hexdigest()[:24]}"
                with path.open("rb") as source:
                    self.files.save(
                        source, f"{batch.id}_{name}", "batch_output", batch.owner, file_id
                    )
                ids[attribute] = file_id

        def ended(stored: Batch) -> Batch:
            if stored.status not in OPEN:
                return stored
            for attribute, file_id in ids.items():
                setattr(stored, attribute, file_id)
            return stored.moved(ending)

        self.batches.update(batch.id, ended)
        shutil.rmtree(folder, ignore_errors=True)


def read_lines(files: FileStore, batch: Batch, max_lines: int) -> tuple[list[Line], list[dict]]:
    """The batch's input lines, or the validation errors of its file (each with its line)."""
    record = files.get(batch.input_file_id, None)
    lines: list[Line] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()

    def error(number: int, code: str, message: str, param: str | None = None) -> None:
        errors.append({"code": code, "message": message, "param": param, "line": number})

    with files.path(record).open("rb") as source:
        for number, raw in enumerate(source, start=1):
            if not raw.strip():
                continue
            if number > max_lines:
                error(number, "too_many_lines", f"A batch takes at most {max_lines:,} lines "
                      "(setting batch_max_lines).")  # fmt: skip
                break
            try:
                item = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                error(number, "invalid_json_line", "This line is not valid JSON.")
                continue
            problem = _line_problem(item, batch.endpoint)
            if problem is not None:
                error(number, "invalid_request", problem[1], problem[0])
            elif item["custom_id"] in seen:
                error(number, "duplicate_custom_id",
                      f"The custom_id {item['custom_id']!r} is used by an earlier line.",
                      "custom_id")  # fmt: skip
            else:
                seen.add(item["custom_id"])
                lines.append(Line(number, item["custom_id"], item["body"]))
    if not lines and not errors:
        error(1, "empty_file", "The input file has no requests.")
    return lines, errors


def _line_problem(item: Any, endpoint: str) -> tuple[str, str] | None:
    """(param, message) of what is wrong with a parsed input line, or None."""
    if not isinstance(item, dict):
        return "line", "A line must be a JSON object with custom_id, method, url and body."
    if not isinstance(item.get("custom_id"), str) or not item["custom_id"]:
        return "custom_id", "'custom_id' must be a non-empty string."
    if item.get("method") != "POST":
        return "method", f"'method' is {item.get('method')!r}; only 'POST' is supported."
    if item.get("url") != endpoint:
        return "url", f"'url' is {item.get('url')!r}; this batch's endpoint is {endpoint!r}."
    if not isinstance(item.get("body"), dict):
        return "body", "'body' must be a JSON object: the request for the endpoint."
    if item["body"].get("stream"):
        return "body.stream", "'body.stream' must be false: a batch's results are collected."
    unknown = set(item) - {"custom_id", "method", "url", "body"}
    if unknown:
        return sorted(unknown)[0], f"Unknown field {sorted(unknown)[0]!r} in the line."
    return None


def _tally(folder: Path, batch: Batch) -> Batch:
    """`batch` with its counts and usage recomputed from the results written in `folder`."""
    batch.counts.update(completed=0, failed=0)
    batch.usage = dict.fromkeys(batch.usage, 0)
    for name, key in (("output.jsonl", "completed"), ("errors.jsonl", "failed")):
        path = folder / name
        for row in path.read_text(encoding="utf-8").splitlines() if path.is_file() else ():
            batch.counts[key] += 1
            response = json.loads(row).get("response") or {}
            _add_usage(batch, (response.get("body") or {}).get("usage") or {})
    return batch


def _add_usage(batch: Batch, usage: dict[str, int]) -> None:
    batch.usage["input_tokens"] += usage.get("prompt_tokens", 0)
    batch.usage["output_tokens"] += usage.get("completion_tokens", 0)
    batch.usage["total_tokens"] += usage.get("total_tokens", 0)


def _append(out: Any, result: dict[str, Any]) -> None:
    out.write(json.dumps(result, ensure_ascii=False) + "\n")
    out.flush()
    os.fsync(out.fileno())


def _written_ids(path: Path) -> set[str]:
    """custom_ids whose results are in `path`; a half-written last line is cut off first."""
    if not path.is_file():
        return set()
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) != len(data):
        with path.open("r+b") as out:
            out.truncate(len(complete))
    return {json.loads(line)["custom_id"] for line in complete.splitlines() if line.strip()}
