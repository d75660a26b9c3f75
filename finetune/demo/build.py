"""The built-in demo model: a tiny Llama built from nothing, so the server runs with no download.

It has its own byte-level BPE tokenizer (trained here on generated text) and a ChatML chat
template; its weights are trained from a fixed seed by `finetune`'s full mode on the synthetic
skills of finetune/demo/skills.py (greetings, its name, colours, counting, copying, calling a
weather tool), under three minutes on two CPU cores on first use, then cached. So it answers a
few things right, follows the chat template, ends its turns and calls the tool it was taught.
"""

import json
import logging
import random
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

# Bump when the recipe changes: the cache folder name carries it, so old builds are not reused.
DEMO_MODEL_VERSION = "6"
DEMO_MODEL_NAME = "kangaroo-demo"

SPECIAL_TOKENS = ["<|pad|>", "<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]

# ChatML, the same template the trainer will use, with Hermes-style tools kept compact (the
# model's context and training rows are short): offered tools are listed as JSON in the system
# turn (one is created when there is none), a call is `<tool_call>\n{"name": ..., "arguments":
# ...}\n</tool_call>` (exactly the text the server's Hermes grammar forces), and `tool` results
# are a turn of their own. Without tools it renders as plain ChatML.
TOOL_CALL_TAGS = ("<tool_call>", "</tool_call>")
TOOLS_NOTE = "Call tools in <tool_call> tags."
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}"
    "{{ '<|im_start|>system\n' }}"
    "{% if messages and messages[0]['role'] == 'system' %}"
    "{{ messages[0]['content'] + '\n' }}"
    "{% endif %}"
    "{{ '<tools>\n' }}"
    "{% for tool in tools %}{{ (tool['function'] | tojson) + '\n' }}{% endfor %}"
    "{{ '</tools>\n" + TOOLS_NOTE + "<|im_end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message['role'] == 'system') %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['tool_calls'] %}"
    "{% if message['content'] %}{{ message['content'] + '\n' }}{% endif %}"
    "{% for call in message['tool_calls'] %}"
    "{% if not loop.first %}{{ '\n' }}{% endif %}"
    "{{ '<tool_call>\n{\"name\": \"' + call['function']['name'] + '\", \"arguments\": ' }}"
    "{{ (call['function']['arguments'] | tojson) + '}\n</tool_call>' }}"
    "{% endfor %}"
    "{% else %}{{ message['content'] }}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# How the demo model is trained (finetune.settings.TrainSettings values), from measurements of
# what a small model learns on 2 cores in under three minutes. The tool call is the hard part: it
# must copy a city it never saw; it takes many short copying rows (finetune/demo/skills.py) and
# 1,500 steps (measured: 1,200 steps 44-48 of 56 held-out calls right, 1,500 steps 51-52).
DEMO_ROWS = 15000
DEMO_RECIPE: dict[str, Any] = {
    "lr": 1e-3,
    "epochs": 40,  # max_steps ends the run first
    "max_steps": 1500,
    "batch_tokens": 1024,
    "max_seq_len": 320,  # the longest tool conversation
    "warmup_steps": 20,
    "eval_every": 500,
    "precision": "fp32",  # the same weights on every CPU (bf16 only where the CPU has it)
    "eval_accuracy": False,  # its eval loss is enough here; the tests measure it in vLLM
}


def demo_model_dir(cache_root: Path) -> Path:
    """The folder the demo model of the current version lives in under `cache_root`."""
    return cache_root / f"{DEMO_MODEL_NAME}-v{DEMO_MODEL_VERSION}"


def ensure_demo_model(cache_root: Path) -> Path:
    """Return the demo model folder, building it first if it is not cached yet.

    The build goes to a temporary folder that is renamed into place, so an interrupted build
    never leaves a folder that looks complete.
    """
    target = demo_model_dir(cache_root)
    if (target / "config.json").is_file():
        return target
    cache_root.mkdir(parents=True, exist_ok=True)
    logger.info("Building the demo model in %s (first use only)", target)
    with tempfile.TemporaryDirectory(dir=cache_root, prefix=".building-") as tmp:
        build_demo_model(Path(tmp) / "model")
        try:
            (Path(tmp) / "model").rename(target)
        except OSError:
            # Another process finished the same build first; its copy is as good as ours.
            if not (target / "config.json").is_file():
                raise
    return target


def build_demo_model(out_dir: Path, seed: int = 0, **recipe: Any) -> None:
    """Build the trained demo model into `out_dir`; `recipe` overrides DEMO_RECIPE values."""
    from finetune.demo import skills
    from finetune.settings import TrainSettings
    from finetune.trainer import train

    with tempfile.TemporaryDirectory(prefix="kangaroo-demo-") as tmp:
        work = Path(tmp)
        build_base_model(work / "base", seed, DEMO_SHAPE, skills.corpus())
        train_path, eval_path = skills.write_dataset(work, seed, DEMO_ROWS)
        settings = TrainSettings(
            base=str(work / "base"),
            data=train_path,
            eval=eval_path,
            out=out_dir,
            full=True,
            seed=seed,
            progress=False,
            **{**DEMO_RECIPE, **recipe},
        )
        train(settings)
    (out_dir / "kangaroo-demo.json").write_text(json.dumps({"version": DEMO_MODEL_VERSION}))


@dataclass(frozen=True)
class ModelShape:
    """Size of a Llama built from nothing."""

    hidden_size: int = 256
    intermediate_size: int = 688
    num_layers: int = 4
    num_heads: int = 4


# Two layers of eight heads copy names better than deeper models for the same build time
# (measured, 5,000 rows and 1,200 steps: 3 layers 13 of 56 held-out calls right, 2 layers 28).
DEMO_SHAPE = ModelShape(num_layers=2, num_heads=8)
# 85 M parameters: big enough that the model, not the server, sets the pace on a CPU.
BENCH_100M_SHAPE = ModelShape(hidden_size=768, intermediate_size=2048, num_layers=12, num_heads=12)


def build_base_model(
    out_dir: Path, seed: int = 0, shape: ModelShape = ModelShape(), corpus: Sequence[str] = ()
) -> None:
    """Write tokenizer, config and random weights of a demo-style model into `out_dir`.

    The tokenizer is trained on generated text plus `corpus`, so that text tokenizes compactly.
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(seed, corpus)
    tokenizer.save_pretrained(out_dir)
    ids = {tok: tokenizer.convert_tokens_to_ids(tok) for tok in SPECIAL_TOKENS}
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=ids["<|begin_of_text|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|pad|>"],
        # float32: on CPUs vLLM's bf16 matmuls fall back to a slow path (measured 3x slower
        # for this model), and a model this small gains nothing from half precision.
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.save_pretrained(out_dir)
    GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[ids["<|im_end|>"], ids["<|end_of_text|>"]],
        pad_token_id=config.pad_token_id,
    ).save_pretrained(out_dir)


def _build_tokenizer(seed: int, extra: Sequence[str]) -> Any:
    """Train a byte-level BPE (2,048 tokens at most) on generated text; wrap it for transformers."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    from finetune.demo.skills import TOKENIZER_WORDS

    rng = random.Random(seed)
    words = " ".join(TOKENIZER_WORDS).split()
    corpus = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 30))) for _ in range(4000)]
    corpus += [*extra, TOOLS_NOTE]  # the chat template's own text
    tok = Tokenizer(models.BPE())
    # A space before a capital is a token of its own, so that a name is the same tokens after a
    # space ("in Lyon?") as after a quote (`"city": "Lyon"`): a tool call copies the question's
    # tokens, where it would otherwise have to learn " Ly" -> "Ly" for every name.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r" (?=\p{Lu})"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer)
    # One token each (not special: the server's tool parser reads them in the text), so that
    # deciding to call a tool is one token and a call costs a few tokens less.
    tok.add_tokens([AddedToken(tag, normalized=False) for tag in TOOL_CALL_TAGS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        additional_special_tokens=["<|im_start|>", "<|end_of_text|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=2048,
    )
