"""A tiny base model built from nothing (seconds), and data helpers for the trainer's tests."""

import json
from pathlib import Path
from typing import Any

import pytest

from server.demo_model import ModelShape, build_base_model

TINY = ModelShape(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=2)
WORDS = "red green blue sun moon star tree river stone".split()


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama with the demo tokenizer and random weights."""
    folder = tmp_path_factory.mktemp("tiny") / "base"
    build_base_model(folder, seed=0, shape=TINY)
    return folder


def chat(user: str, reply: str, **assistant_extra: Any) -> dict[str, Any]:
    """A one-turn chat row."""
    return {
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": reply, **assistant_extra},
        ]
    }


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """Write rows (objects, or raw strings for broken lines) one per line."""
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def echo_rows(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """Rows teaching 'say W1 W2' -> 'W1 W2.' on random words."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        rows.append(chat(f"say {words}", f"{words}."))
    return rows
