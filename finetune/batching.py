"""Group examples into batches of about `batch_tokens` tokens: packed or padded.

Packed: rows share sequences of up to `seq_len` tokens (best fit); position ids restart
at 0 for every row, and transformers turns restarting positions (with no attention mask) into a
block-diagonal causal mask, so a row never attends to the rows packed beside it.
Padded: each batch holds whole rows padded to its longest, with an attention mask.
"""

import bisect
import random
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from finetune.data import IGNORE, Example

PACK_MIN = 256


@dataclass
class Batch:
    """Tensors of one optimiser step, all (B, T)."""

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor
    attention_mask: torch.Tensor | None  # None when packed: the positions carry the boundaries

    @property
    def num_tokens(self) -> int:
        """Tokens processed, padding included."""
        return self.input_ids.numel()

    @property
    def num_target_tokens(self) -> int:
        """Tokens that take loss."""
        return int((self.targets != IGNORE).sum())

    def to(self, device: torch.device) -> "Batch":
        """The same batch on `device`."""
        mask = None if self.attention_mask is None else self.attention_mask.to(device)
        return Batch(
            self.input_ids.to(device), self.position_ids.to(device), self.targets.to(device), mask
        )


def epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """A shuffle of the example indices that depends only on the seed and the epoch."""
    order = list(range(num_examples))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return order


def make_batches(
    examples: list[Example],
    batch_tokens: int,
    seq_len: int,
    packing: bool,
    pad_id: int,
    fixed_shape: bool = False,
) -> list[Batch]:
    """Batches over `examples` in the given order (rows are already at most `seq_len` long).

    `fixed_shape` (packing only) gives every batch the same (rows, length), padding included:
    compiled code is specialised to shapes, and each new shape costs a recompilation."""
    if packing:
        pack_len = packed_length(examples, seq_len)
        sequences = _pack(examples, pack_len)
        per_batch = max(1, batch_tokens // pack_len)
        groups = [sequences[i : i + per_batch] for i in range(0, len(sequences), per_batch)]
        if fixed_shape:
            return [_packed_batch(group, pad_id, pack_len, per_batch) for group in groups]
        return [_packed_batch(group, pad_id) for group in groups]
    return [_padded_batch(group, pad_id) for group in _by_budget(examples, batch_tokens)]


def packed_length(examples: list[Example], seq_len: int) -> int:
    """How long packed sequences are: the longest row, at least PACK_MIN, at most `seq_len`.

    Attention over a packed sequence costs its whole length (the block mask hides scores, it
    does not skip them), so sequences are no longer than the data needs.
    """
    return min(seq_len, max(PACK_MIN, *(len(e.input_ids) for e in examples)))


def _pack(examples: list[Example], seq_len: int) -> list[list[Example]]:
    """Best fit, in the given order: each row goes into the open sequence with the least room
    that still holds it, or starts a new one; sequences keep the order they were started in.

    On shuffled rows this fills sequences almost completely, where filling only the last one
    (next fit) left a fifth of every sequence empty on rows of 15 to 175 tokens.
    """
    sequences: list[list[Example]] = []
    room: list[tuple[int, int]] = []  # (free tokens, sequence index) of open sequences, sorted
    for example in examples:
        size = len(example.input_ids)
        fits = bisect.bisect_left(room, (size, -1))
        if fits < len(room):
            free, index = room.pop(fits)
            sequences[index].append(example)
        else:
            free, index = seq_len, len(sequences)
            sequences.append([example])
        if free > size:
            bisect.insort(room, (free - size, index))
    return sequences


def _packed_batch(
    sequences: list[list[Example]], pad_id: int, width: int | None = None, rows: int | None = None
) -> Batch:
    # Unless a shape is given, pad only to the longest sequence of the batch.
    width = width or max(sum(len(e.input_ids) for e in seq) for seq in sequences)
    ids = torch.full((rows or len(sequences), width), pad_id, dtype=torch.long)
    targets = torch.full_like(ids, IGNORE)
    positions = torch.zeros_like(ids)
    for b, seq in enumerate(sequences):
        start = 0
        for example in seq:
            end = start + len(example.input_ids)
            ids[b, start:end] = torch.tensor(example.input_ids)
            targets[b, start:end] = torch.tensor(example.targets)
            positions[b, start:end] = torch.arange(end - start)
            start = end
        # Padding gets positions of its own, so it forms a separate block.
        positions[b, start:] = torch.arange(width - start)
    positions[len(sequences) :] = torch.arange(width)  # rows of padding only, if any
    return Batch(ids, positions, targets, None)


def _by_budget(examples: list[Example], batch_tokens: int) -> Iterator[list[Example]]:
    """Whole rows per batch while (rows x longest row) stays within the budget."""
    group: list[Example] = []
    longest = 0
    for example in examples:
        width = max(longest, len(example.input_ids))
        if group and width * (len(group) + 1) > batch_tokens:
            yield group
            group, width = [], len(example.input_ids)
        group.append(example)
        longest = width
    if group:
        yield group


def _padded_batch(examples: list[Example], pad_id: int) -> Batch:
    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    targets = torch.full_like(ids, IGNORE)
    mask = torch.zeros_like(ids)
    for b, example in enumerate(examples):
        n = len(example.input_ids)
        ids[b, :n] = torch.tensor(example.input_ids)
        targets[b, :n] = torch.tensor(example.targets)
        mask[b, :n] = 1
    positions = torch.arange(width).expand(len(examples), width).clone()
    return Batch(ids, positions, targets, mask)
