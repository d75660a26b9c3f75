"""The offline batch runner (`python -m server.batch run`) on the real engine: the Batch API's
line format and checks, answers as the live route gives them, the summary and exit codes,
--resume after an interrupted run, and the same job on a local Ray instance with one actor.

Three engine starts in all (a local run, a resumed run, a Ray run); the other tests start none.
"""

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

import server.app
from finetune.demo.skills import IDENTITY_REPLY
from server.batch.in_process import lines_in_flight
from server.batch.offline import run_local
from server.batch.offline_job import Job, refused
from server.settings import load_settings
from tests.conftest import MODEL, REPO
from tests.fakes import CountingEngine

ENGINE = ["--kv-cache-gib", "1", "--enforce-eager", "--max-model-len", "2048"]
CHAT, COMPLETIONS = "/v1/chat/completions", "/v1/completions"


def _line(custom_id: str, url: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def _chat(question: str, **extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": question}]
    return {"model": MODEL, "messages": messages, "temperature": 0, "max_tokens": 16, **extra}


# Greedy lines of both endpoints, and one of each kind of line that is not answered.
MIXED: list[dict[str, Any] | str] = [
    _line("name", CHAT, _chat("What is your name?")),
    _line(
        "cmpl",
        COMPLETIONS,
        {"model": MODEL, "prompt": "the kangaroo", "max_tokens": 8, "temperature": 0},
    ),
    '{"custom_id": "broken", "method": "POST", ',  # line 3: not JSON
    _line("name", CHAT, _chat("Who are you?")),  # line 4: a custom_id used before
    _line("negative", CHAT, _chat("Hi", max_tokens=-1)),  # the route answers 400
    _line("color", CHAT, _chat("What color is the sky?")),
]


def _write_jsonl(path: Path, items: list[dict[str, Any] | str]) -> Path:
    path.write_text("".join((i if isinstance(i, str) else json.dumps(i)) + "\n" for i in items))
    return path


def _rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(row) for row in path.read_text().splitlines()] if path.is_file() else []


def _batch(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m server.batch run ARGS` to its end."""
    cmd = [sys.executable, "-m", "server.batch", "run", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


def _answers(rows: list[dict[str, Any]]) -> dict[str, tuple[int, Any]]:
    """custom_id -> (status, the answer's text or the error body)."""
    found = {}
    for row in rows:
        body = row["response"]["body"]
        choice = body["choices"][0] if "choices" in body else None
        text = (choice.get("message") or {}).get("content", choice.get("text")) if choice else None
        found[row["custom_id"]] = (row["response"]["status_code"], text or body)
    return found


@pytest.fixture(scope="module")
def local_run(
    demo_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[subprocess.CompletedProcess[str], Path, Path]:
    """MIXED run on this machine: the process, its output file and its error file."""
    folder = tmp_path_factory.mktemp("offline")
    source = _write_jsonl(folder / "in.jsonl", MIXED)
    done = _batch(source, "--output", folder / "out.jsonl", *ENGINE)
    return done, folder / "out.jsonl", folder / "out.errors.jsonl"


def test_a_local_run_answers_each_line_as_the_live_route_and_files_the_rest(
    local_run: tuple[subprocess.CompletedProcess[str], Path, Path],
) -> None:
    done, output, errors = local_run
    assert done.returncode == 1, done.stderr  # a line failed
    answers = _answers(_rows(output))
    assert set(answers) == {"name", "cmpl", "color"}
    assert answers["name"] == (200, IDENTITY_REPLY)  # what the live route answers, greedy
    assert answers["cmpl"][0] == 200
    assert answers["cmpl"][1]
    completion = next(row for row in _rows(output) if row["custom_id"] == "cmpl")
    assert completion["response"]["body"]["object"] == "text_completion"
    assert completion["response"]["body"]["usage"]["completion_tokens"] == 8
    assert completion["id"].startswith("batch_req_")
    assert completion["error"] is None

    by_id = {(row["custom_id"], (row["error"] or {}).get("line")): row for row in _rows(errors)}
    assert set(by_id) == {(None, 3), ("name", 4), ("negative", None)}
    assert by_id[None, 3]["error"]["code"] == "invalid_json_line"
    assert by_id[None, 3]["error"]["message"].startswith("Line 3: ")
    assert by_id["name", 4]["error"]["code"] == "duplicate_custom_id"
    refusal = by_id["negative", None]["response"]
    assert refusal["status_code"] == 400
    assert refusal["body"]["error"]["type"] == "invalid_request_error"
    assert refusal["body"]["error"]["param"] == "max_tokens"
    assert "6 lines: 3 ok, 3 failed" in done.stderr
    assert "400 invalid_request_error: 1" in done.stderr
    assert "duplicate_custom_id: 1" in done.stderr


def test_a_resumed_run_runs_only_the_lines_not_written(demo_model: Path, tmp_path: Path) -> None:
    source = _write_jsonl(
        tmp_path / "in.jsonl",
        [_line(f"r{i}", CHAT, _chat("What is your name?")) for i in range(8)] + ["not json"],
    )
    output, errors = tmp_path / "out.jsonl", tmp_path / "out.errors.jsonl"
    # An interrupted run: three answers, a fourth half-written, the bad line's error row.
    before = [{"id": f"batch_req_before{i}", "custom_id": f"r{i}", "error": None,
               "response": {"status_code": 200, "request_id": None,
                            "body": {"choices": [{"message": {"content": "before"}}]}}}
              for i in range(3)]  # fmt: skip
    output.write_text("".join(json.dumps(row) + "\n" for row in before) + '{"id": "batch_req_')
    errors.write_text(json.dumps(refused(9, None, "invalid_json_line", "Not JSON.")) + "\n")

    refusal = _batch(source, "--output", output, *ENGINE)
    assert refusal.returncode == 2
    assert "--resume" in refusal.stderr

    done = _batch(source, "--output", output, "--resume", *ENGINE)
    assert done.returncode == 1, done.stderr  # the bad line's error stands
    rows = _rows(output)
    assert sorted(row["custom_id"] for row in rows) == [f"r{i}" for i in range(8)]  # once each
    assert rows[:3] == before  # not run again
    assert all(_answers(rows)[f"r{i}"] == (200, IDENTITY_REPLY) for i in range(3, 8))
    assert len(_rows(errors)) == 1  # the bad line is not reported twice
    assert "9 lines: 8 ok, 1 failed (invalid_json_line: 1); 4 of them" in done.stderr

    again = _batch(source, "--output", output, "--resume", *ENGINE)
    assert again.returncode == 1
    assert "Engine ready" not in again.stderr  # nothing left to run: no engine started
    assert _rows(output) == rows
    assert len(_rows(errors)) == 1


def test_a_finished_job_resumed_exits_0_without_an_engine(tmp_path: Path) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [_line("a", CHAT, _chat("Hi"))])
    answered = {"id": "batch_req_1", "custom_id": "a", "error": None,
                "response": {"status_code": 200, "request_id": None, "body": {}}}  # fmt: skip
    _write_jsonl(tmp_path / "out.jsonl", [answered])
    done = _batch(source, "--output", tmp_path / "out.jsonl", "--resume")
    assert done.returncode == 0, done.stderr
    assert "1 line: 1 ok, 0 failed; 1 of them written by the run this one resumed" in done.stderr


def test_bad_usage_exits_2_before_anything_runs(tmp_path: Path) -> None:
    missing = _batch(tmp_path / "none.jsonl", "--output", tmp_path / "out.jsonl")
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    source = _write_jsonl(tmp_path / "in.jsonl", [_line("a", CHAT, _chat("Hi"))])
    (tmp_path / "out.errors.jsonl").write_text("")
    taken = _batch(source, "--output", tmp_path / "out.jsonl")
    assert taken.returncode == 2
    assert "out.errors.jsonl' already exists" in taken.stderr
    bad_setting = _batch(source, "--output", tmp_path / "other.jsonl", "--max-num-seqs", "0")
    assert bad_setting.returncode == 2
    assert "max_num_seqs" in bad_setting.stderr
    assert not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / "other.jsonl").exists()


def test_the_same_job_on_ray_with_one_actor_gives_the_local_answers(
    local_run: tuple[subprocess.CompletedProcess[str], Path, Path], tmp_path: Path
) -> None:
    _, local_output, local_errors = local_run
    source = _write_jsonl(tmp_path / "in.jsonl", MIXED)
    output = tmp_path / "out.jsonl"
    done = _batch(source, "--output", output, "--ray", "--actors", "1", *ENGINE)
    assert done.returncode == 1, done.stderr
    assert _answers(_rows(output)) == _answers(_rows(local_output))
    errors = _rows(tmp_path / "out.errors.jsonl")
    assert [row["error"] for row in errors if row["response"] is None] == [
        row["error"] for row in _rows(local_errors) if row["response"] is None
    ]
    assert _answers([row for row in errors if row["response"]]) == _answers(
        [row for row in _rows(local_errors) if row["response"]]
    )
    assert "6 lines: 3 ok, 3 failed" in done.stderr


def test_offline_lines_queue_in_the_engine_beyond_its_places(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    engine = CountingEngine()
    engine.released.clear()  # every line holds its place until the test has counted them
    monkeypatch.setattr(server.app, "_start_vllm", lambda settings, model_path: engine)
    lines = [_line(f"r{i}", CHAT, _chat("Hi", max_tokens=2)) for i in range(30)]
    job = Job(_write_jsonl(tmp_path / "in.jsonl", lines), tmp_path / "out", tmp_path / "err")
    settings = load_settings(model="fake-org/fake", served_model_name=MODEL, max_num_seqs=8)
    with ThreadPoolExecutor(1) as pool:
        run = pool.submit(run_local, job, settings, lines_in_flight(settings))
        deadline = time.monotonic() + 120
        while engine.now < 10 and time.monotonic() < deadline and not run.done():
            time.sleep(0.01)
        in_engine = engine.now
        engine.released.set()
        assert run.result(timeout=120) == 0
    assert in_engine == engine.most == 10  # its 8 places, and a quarter more in its queue
    assert len(_rows(tmp_path / "out")) == 30
