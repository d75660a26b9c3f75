"""Parts of the vLLM engine module that need no running engine."""

import os
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer
from vllm.engine.arg_utils import AsyncEngineArgs
from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
from vllm.parser.abstract_parser import Parser
from vllm.sampling_params import RequestOutputKind

from finetune.demo import skills
from server.engine.generation import SamplingOptions, ToolUse
from server.engine.vllm_engine import (
    VllmEngine,
    _sampling_params,
    _tool_request_fields,
    _Tooling,
    checkpoint_dtype,
    install_cpu_lora_fix,
    render_chat_template,
)
from server.errors import InvalidRequestError
from server.settings import load_settings

STRICT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] not in ['user', 'assistant'] %}"
    "{{ raise_exception('Only user and assistant roles are supported, not ' + m['role']) }}"
    "{% endif %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
)


@pytest.fixture(scope="module")
def tokenizer(demo_model: Path):
    tok = AutoTokenizer.from_pretrained(demo_model)
    tok.chat_template = STRICT_TEMPLATE
    return tok


def test_template_renders_accepted_messages(tokenizer) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    assert render_chat_template(tokenizer, messages) == "user: hi\nassistant: yo\n"


def test_template_refusal_is_a_400_naming_the_reason(tokenizer) -> None:
    with pytest.raises(InvalidRequestError) as err:
        # A system turn: the generic tool format rewrites `tool` turns as user turns.
        render_chat_template(tokenizer, [{"role": "system", "content": "42"}])
    assert err.value.status_code == 400
    assert err.value.param == "messages"
    assert "not system" in err.value.message


def test_settings_reach_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    captured = {}

    def capture(args):
        captured["args"] = args
        raise RuntimeError("captured")

    monkeypatch.setattr(AsyncEngineArgs, "create_engine_config", capture)
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "unset")
    settings = load_settings(
        [
            "--dtype",
            "float32",
            "--max-model-len",
            "512",
            "--max-num-seqs",
            "7",
            "--max-num-batched-tokens",
            "1024",
            "--no-enable-prefix-caching",
            "--kv-cache-gib",
            "3",
            "--gpu-memory-utilization",
            "0.5",
            "--tensor-parallel-size",
            "2",
            "--pipeline-parallel-size",
            "3",
            "--distributed-executor-backend",
            "ray",
            "--seed",
            "9",
            "--enforce-eager",
            "--no-async-scheduling",
            "--enable-lora",
            "--max-lora-rank",
            "64",
            "--max-loras",
            "2",
            "--max-cpu-loras",
            "5",
            "--served-model-name",
            "named",
        ]
    )
    with pytest.raises(RuntimeError, match="captured"):
        VllmEngine.start(settings, "/models/m")
    args = captured["args"]
    assert (args.model, args.served_model_name, args.dtype) == ("/models/m", "named", "float32")
    assert (args.max_model_len, args.max_num_seqs, args.max_num_batched_tokens) == (512, 7, 1024)
    assert args.enable_prefix_caching is False
    assert args.gpu_memory_utilization == 0.5
    assert (args.tensor_parallel_size, args.pipeline_parallel_size) == (2, 3)
    assert args.distributed_executor_backend == "ray"
    assert args.seed == 9
    assert args.enforce_eager is True
    assert args.async_scheduling is False  # on by default: None, vLLM's choice (on CPU: ours)
    assert (args.enable_lora, args.max_lora_rank, args.max_loras, args.max_cpu_loras) == (
        True,
        64,
        2,
        5,
    )
    assert os.environ["VLLM_CPU_KVCACHE_SPACE"] == "3"


def test_auto_dtype_is_the_checkpoint_dtype(tmp_path: Path) -> None:
    assert checkpoint_dtype(str(tmp_path)) == "auto"  # no config: vLLM decides
    (tmp_path / "config.json").write_text('{"torch_dtype": "float32"}')
    assert checkpoint_dtype(str(tmp_path)) == "float32"
    (tmp_path / "config.json").write_text('{"dtype": "bfloat16"}')
    assert checkpoint_dtype(str(tmp_path)) == "bfloat16"
    (tmp_path / "config.json").write_text('{"dtype": "int4"}')
    assert checkpoint_dtype(str(tmp_path)) == "auto"
    assert checkpoint_dtype("org/hub-model") == "auto"


CLOSE = {"rtol": 1e-5, "atol": 1e-5}  # float32 kernels against a float64 reference


def _reference(inputs, weights, indices):
    """Per token: inputs[t] @ weights[indices[t]].T in float64; zero for slot -1."""
    stacked = weights.squeeze(1).double()
    rows = [
        stacked[i] @ x.double() if i >= 0 else torch.zeros(stacked.shape[1], dtype=torch.float64)
        for x, i in zip(inputs, indices.tolist(), strict=True)
    ]
    return torch.stack(rows)


def test_cpu_lora_kernels_apply_each_tokens_slot_and_none_for_minus_one() -> None:
    import vllm.lora.ops.torch_ops.lora_ops as lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    install_cpu_lora_fix()
    assert punica_cpu.bgmv_shrink is lora_ops.bgmv_shrink
    assert lora_ops.bgmv_shrink.kangaroo_fixed  # type: ignore[attr-defined]
    gen = torch.Generator().manual_seed(0)
    slots, tokens, hidden, rank = 3, 7, 16, 4
    indices = torch.tensor([0, 2, -1, 1, 2, -1, 0])
    x = torch.randn(tokens, hidden, generator=gen)
    a = torch.randn(slots, 1, rank, hidden, generator=gen)
    b = torch.randn(slots, 1, hidden, rank, generator=gen)

    shrunk = torch.zeros(tokens, rank)
    lora_ops.bgmv_shrink(x, a, shrunk, indices, 0.5)
    torch.testing.assert_close(shrunk.double(), 0.5 * _reference(x, a, indices), **CLOSE)

    out = torch.ones(tokens, hidden)
    lora_ops.bgmv_expand(shrunk, b, out, indices, add_inputs=True)
    torch.testing.assert_close(out.double(), 1 + _reference(shrunk, b, indices), **CLOSE)
    assert torch.equal(out[indices < 0], torch.ones(2, hidden))  # base tokens untouched

    sliced = torch.zeros(tokens, 2 * hidden)
    lora_ops.bgmv_expand_slice(shrunk, b, sliced, indices, hidden, hidden, add_inputs=True)
    torch.testing.assert_close(sliced[:, hidden:].double(), _reference(shrunk, b, indices), **CLOSE)
    assert not sliced[:, :hidden].any()


def test_a_whole_answer_is_asked_of_vllm_once_unless_tool_calls_are_parsed() -> None:
    tools = ToolUse((skills.WEATHER_TOOL,), "auto")
    whole = SamplingOptions(max_tokens=8, whole=True, tools=tools)
    request = ChatCompletionRequest.model_validate(_tool_request_fields(tools, whole))
    plain, parsed = _Tooling(None, None, Parser, None), _Tooling(None, request, Parser, None)
    assert _sampling_params(whole, 1, plain).output_kind == RequestOutputKind.FINAL_ONLY
    # vLLM's tool parsers read the answer delta by delta; a stream is a stream.
    assert _sampling_params(whole, 1, parsed).output_kind == RequestOutputKind.DELTA
    streamed = SamplingOptions(max_tokens=8)
    assert _sampling_params(streamed, 1, plain).output_kind == RequestOutputKind.DELTA
