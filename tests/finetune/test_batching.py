"""Packing: several rows in one sequence give exactly the loss of the rows run one by one."""

import dataclasses
import random
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from finetune.batching import epoch_order, make_batches
from finetune.data import IGNORE, tokenize_chat
from finetune.trainer import batch_loss
from tests.finetune.conftest import echo_rows


@pytest.fixture(scope="module")
def model_and_examples(tiny_base: Path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_base)
    model = AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32).eval()
    rows = echo_rows(12, seed=3)
    examples = [tokenize_chat(i, row["messages"], tokenizer) for i, row in enumerate(rows)]
    return model, examples


@torch.no_grad()
def test_packed_batch_loss_equals_rows_run_separately(model_and_examples) -> None:
    model, examples = model_and_examples
    packed = make_batches(examples, batch_tokens=512, seq_len=128, packing=True, pad_id=0)
    assert len(packed) == 1
    assert packed[0].input_ids.shape[0] < len(examples)  # rows really share sequences
    alone = [make_batches([e], 512, 128, packing=False, pad_id=0)[0] for e in examples]

    packed_sum, packed_count = batch_loss(model, packed[0])
    separate = [batch_loss(model, batch) for batch in alone]
    assert packed_count == sum(n for _, n in separate)
    torch.testing.assert_close(packed_sum, sum(loss for loss, _ in separate), rtol=1e-5, atol=1e-4)


@torch.no_grad()
def test_padded_batch_loss_equals_rows_run_separately(model_and_examples) -> None:
    model, examples = model_and_examples
    padded = make_batches(examples, batch_tokens=4096, seq_len=128, packing=False, pad_id=0)
    assert len(padded) == 1
    assert padded[0].attention_mask is not None
    loss, count = batch_loss(model, padded[0])
    separate = [batch_loss(model, make_batches([e], 512, 128, False, 0)[0]) for e in examples]
    torch.testing.assert_close(loss, sum(s for s, _ in separate), rtol=1e-5, atol=1e-4)
    assert count == sum(n for _, n in separate)


def test_batches_respect_the_token_budget(model_and_examples) -> None:
    _, examples = model_and_examples
    for packing in (True, False):
        batches = make_batches(examples * 4, batch_tokens=96, seq_len=48, packing=packing, pad_id=0)
        assert all(b.num_tokens <= 96 for b in batches)
        targets = sum(b.num_target_tokens for b in batches)
        assert targets == 4 * sum(e.num_target_tokens for e in examples)
        assert all((b.targets[b.input_ids == 0] == IGNORE).all() for b in batches if packing)


def test_epoch_order_is_a_seeded_shuffle() -> None:
    assert epoch_order(50, seed=1, epoch=0) == epoch_order(50, seed=1, epoch=0)
    assert epoch_order(50, seed=1, epoch=0) != epoch_order(50, seed=1, epoch=1)
    assert sorted(epoch_order(50, seed=2, epoch=3)) == list(range(50))


@torch.no_grad()
def test_fixed_shape_batches_all_have_one_shape_and_the_same_loss(model_and_examples) -> None:
    model, examples = model_and_examples
    rows = examples * 3 + examples[:5]
    loose = make_batches(rows, batch_tokens=384, seq_len=128, packing=True, pad_id=0)
    fixed = make_batches(rows, 384, 128, packing=True, pad_id=0, fixed_shape=True)

    assert len({tuple(b.input_ids.shape) for b in loose}) > 1  # the case fixed_shape is for
    # Sequences of seq_len (the rows are shorter than PACK_MIN), batch_tokens // seq_len of them.
    assert {tuple(b.input_ids.shape) for b in fixed} == {(3, 128)}
    assert len(fixed) == len(loose)
    for a, b in zip(loose, fixed, strict=True):
        loss_a, count_a = batch_loss(model, a)
        loss_b, count_b = batch_loss(model, b)
        assert count_a == count_b
        torch.testing.assert_close(loss_a, loss_b, rtol=1e-5, atol=1e-4)


def test_packing_fills_sequences_with_rows_of_many_lengths(model_and_examples) -> None:
    _, examples = model_and_examples
    rng = random.Random(0)
    # Rows of 15..175 tokens in random order, packed into 256-token sequences.
    rows = [
        dataclasses.replace(e, input_ids=[5] * n, targets=[5] * n)
        for e, n in zip(examples * 100, (rng.randint(15, 175) for _ in range(1200)), strict=False)
    ]
    batches = make_batches(rows, batch_tokens=2048, seq_len=256, packing=True, pad_id=0)
    tokens = sum(len(r.input_ids) for r in rows)
    padding = 1 - tokens / sum(b.num_tokens for b in batches)
    assert padding < 0.05
    assert sum(b.num_target_tokens for b in batches) == tokens  # every row, once
