"""A stored batch for the runner's and the pacer's tests (no HTTP, no engine)."""

import io
import json
import time
from pathlib import Path

from server.batch.files import FileStore
from server.batch.jobs import Batch, BatchStore, new_batch_id


def stored_batch(root: Path, lines: int) -> tuple[FileStore, BatchStore, Batch]:
    """A batch of `lines` completion lines (custom_ids r0, r1, ...; prompts p0, p1, ...)
    waiting to run, with its stores in `root`."""
    files, batches = FileStore(root, 2**20), BatchStore(root)
    data = b"".join(
        json.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/completions",
                    "body": {"model": "m", "prompt": f"p{i}"}}).encode() + b"\n"
        for i in range(lines)
    )  # fmt: skip
    upload = files.save(io.BytesIO(data), "in.jsonl", "batch", "k")
    now = int(time.time())
    batch = Batch(new_batch_id(), "k", "/v1/completions", upload.id, "24h", now, now + 3600)
    batches.create(batch, None)
    return files, batches, batch
