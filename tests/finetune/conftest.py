"""Data helpers for the trainer's tests (the tiny base model is in tests/conftest.py)."""

import json
from pathlib import Path
from typing import Any

WORDS = "red green blue sun moon star tree river stone".split()


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
