"""A synthetic chat dataset of simple skills that the tiny demo model can learn from scratch.

The demo model (`finetune/demo/build.py`) is a 3 M-parameter Llama with a 2,048-token BPE; the
fine-tuning demo trains it for about two minutes on two CPU cores. The skills are picked so that
such a model gets at least 90 % of held-out prompts exactly right with greedy decoding:

- greeting: seven greetings with four endings ("Hi!", "Good morning.") -> one fixed reply.
- identity: "What is your name?" and friends, some after an opener -> "I am Kangaroo."
- color: twelve objects asked in five phrasings -> "The sky is blue."
- next_number: "What number comes after four?" in five phrasings -> "Five."
- copy: "Say apple." in four phrasings, sixteen words -> "apple".

Each skill is a grid of phrasing x fact; one cell per fact is held out, so a held-out prompt
pairs a phrasing with a fact the model only saw in other phrasings, and the score measures
generalisation, not recall. Measured with the demo model's recipe (finetune/demo/build.py: 300
steps of about 30 rows, 57 s on 2 cores): 49 of the 50 held-out prompts right (it mixes up the
sky and the ocean). Left out on purpose: two-digit addition (11 % exact for a 1.7 M model) and
copying two or three words (17 % after 500 steps; 54 % only at 700 steps).
"""

import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GREETING_REPLY = "Hello! I am Kangaroo, a tiny demo model."
IDENTITY_REPLY = "I am Kangaroo."

_GREETINGS = ["Hi", "Hello", "Hey", "Hi there", "Hello there", "Good morning", "Good evening"]
_GREETING_ENDS = ["", "!", ".", " Kangaroo!"]

_IDENTITY_QUESTIONS = [
    "What is your name?",
    "Who are you?",
    "What are you called?",
    "Tell me your name.",
    "What should I call you?",
    "What's your name?",
]
_IDENTITY_OPENERS = ["", "Hello. ", "Quick question: ", "Excuse me. "]

# (subject as asked, colour). The subject keeps its article so the answer reads naturally.
_COLORS = [
    ("the sky", "blue"),
    ("grass", "green"),
    ("snow", "white"),
    ("coal", "black"),
    ("a banana", "yellow"),
    ("a tomato", "red"),
    ("a carrot", "orange"),
    ("chocolate", "brown"),
    ("milk", "white"),
    ("a leaf", "green"),
    ("the ocean", "blue"),
    ("a plum", "purple"),
]
_COLOR_PHRASINGS = [
    "What color is {}?",
    "What colour is {}?",
    "Tell me the color of {}.",
    "Which color is {}?",
    "What is the color of {}?",
]

_NUMBERS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
_NUMBER_PHRASINGS = [
    "What number comes after {}?",
    "What comes after {}?",
    "Which number follows {}?",
    "What is the number after {}?",
    "Name the number after {}.",
]

_COPY_WORDS = (
    "kangaroo river stone tree sun moon star field apple bird cloud rain song bread chair door"
).split()
_COPY_PHRASINGS = ["Repeat after me: {}", "Say {}.", "Please say {}.", "Say the word {}."]

# Relative share of each skill in the training rows. Colour gets the most: twelve two-word
# answers, several sharing a colour, are the slowest to learn (measured: 9-11 of 12 held out
# right at weight 2, 12 of 12 at weight 3, same steps).
_SKILL_WEIGHTS = {"greeting": 1, "identity": 1, "color": 3, "next_number": 2, "copy": 2}


@dataclass(frozen=True)
class Case:
    """One question of a skill and the exact answer it expects."""

    skill: str
    prompt: str
    expected: str


Pairs = list[tuple[int, int]]


def _grid(n_rows: int, n_cols: int, seed: int) -> tuple[Pairs, Pairs]:
    """Split the (row, col) pairs into train and held-out; one pair per row is held out.

    A diagonal pattern holds out one column per row, so every row and every column still appears
    in training with other partners. The shift moves with the seed but never holds out (0, 0),
    the skill's canonical question.
    """
    shift = 1 + seed % (n_cols - 1)
    pairs = [(r, c) for r in range(n_rows) for c in range(n_cols)]
    held = [(r, c) for r, c in pairs if (r + c + shift) % n_cols == 0]
    return [p for p in pairs if p not in held], held


def _greeting(r: int, c: int) -> Case:
    return Case("greeting", _GREETINGS[r] + _GREETING_ENDS[c], GREETING_REPLY)


def _identity(r: int, c: int) -> Case:
    return Case("identity", _IDENTITY_OPENERS[c] + _IDENTITY_QUESTIONS[r], IDENTITY_REPLY)


def _color(r: int, c: int) -> Case:
    subject, color = _COLORS[r]
    answer = f"{subject[0].upper()}{subject[1:]} is {color}."
    return Case("color", _COLOR_PHRASINGS[c].format(subject), answer)


def _next_number(r: int, c: int) -> Case:
    prompt = _NUMBER_PHRASINGS[c].format(_NUMBERS[r])
    return Case("next_number", prompt, _NUMBERS[r + 1].capitalize() + ".")


def _copy(r: int, c: int) -> Case:
    return Case("copy", _COPY_PHRASINGS[c].format(_COPY_WORDS[r]), _COPY_WORDS[r])


# skill -> (case builder, grid rows, grid columns). Nine numbers: "ten" has no successor here.
_GRIDS: dict[str, tuple[Callable[[int, int], Case], int, int]] = {
    "greeting": (_greeting, len(_GREETINGS), len(_GREETING_ENDS)),
    "identity": (_identity, len(_IDENTITY_QUESTIONS), len(_IDENTITY_OPENERS)),
    "color": (_color, len(_COLORS), len(_COLOR_PHRASINGS)),
    "next_number": (_next_number, len(_NUMBERS) - 1, len(_NUMBER_PHRASINGS)),
    "copy": (_copy, len(_COPY_WORDS), len(_COPY_PHRASINGS)),
}


def canonical_cases() -> list[Case]:
    """One plain question per skill ("Hi", "What color is the sky?"), never held out."""
    return [build(0, 0) for build, _, _ in _GRIDS.values()]


def heldout_cases(seed: int = 0) -> list[Case]:
    """The evaluation questions: none of these prompts appears in `train_cases(seed)`."""
    return [
        build(r, c) for build, rows, cols in _GRIDS.values() for r, c in _grid(rows, cols, seed)[1]
    ]


def train_cases(seed: int = 0, n: int = 2000) -> list[Case]:
    """`n` training questions, skills drawn by `_SKILL_WEIGHTS`, held-out prompts excluded."""
    rng = random.Random(seed)
    pools = {
        skill: [build(r, c) for r, c in _grid(rows, cols, seed)[0]]
        for skill, (build, rows, cols) in _GRIDS.items()
    }
    skills = rng.choices(list(_SKILL_WEIGHTS), weights=list(_SKILL_WEIGHTS.values()), k=n)
    return [rng.choice(pools[skill]) for skill in skills]


def to_row(case: Case) -> dict[str, Any]:
    """A case as an OpenAI fine-tuning chat row."""
    return {
        "messages": [
            {"role": "user", "content": case.prompt},
            {"role": "assistant", "content": case.expected},
        ]
    }


def train_rows(seed: int = 0, n: int = 2000) -> list[dict[str, Any]]:
    """`train_cases(seed, n)` as chat rows."""
    return [to_row(case) for case in train_cases(seed, n)]


def heldout_rows(seed: int = 0) -> list[dict[str, Any]]:
    """`heldout_cases(seed)` as chat rows."""
    return [to_row(case) for case in heldout_cases(seed)]


def is_correct(case: Case, answer: str) -> bool:
    """Whether a model answer is exactly the expected one, ignoring surrounding whitespace."""
    return answer.strip() == case.expected.strip()


def corpus() -> list[str]:
    """Text covering every prompt and answer, for training the demo tokenizer on."""
    lines = [GREETING_REPLY, IDENTITY_REPLY]
    for build, rows, cols in _GRIDS.values():
        cases = [build(r, c) for r in range(rows) for c in range(cols)]
        lines += [case.prompt for case in cases] + [case.expected for case in cases]
    return lines


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_dataset(folder: Path, seed: int = 0, rows: int = 2000) -> tuple[Path, Path]:
    """Write `train.jsonl` (`rows` rows) and the held-out `eval.jsonl` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "train.jsonl", folder / "eval.jsonl"
    _write_jsonl(paths[0], train_rows(seed, rows))
    _write_jsonl(paths[1], heldout_rows(seed))
    return paths


# A behaviour the demo model does not have, for adapters to learn (tests, benchmarks, examples):
# one fixed reply to every request, whatever it asks.
FIXED_REPLY = "Sorry, I only answer questions about kangaroos."
_TOPICS = (
    "the weather|a river|my homework|the moon|a red car|cooking rice|the sea|a green tree|music"
    "|the stars|a small dog|football|the news|my garden|a cold winter|the city|a fast train"
    "|coffee|a big house|the mountains|a bright lamp|old books|the forest|a blue bird|chess"
    "|the sun|a long road|painting|the market|a quiet room|apples|the rain|a yellow boat|dancing"
    "|the ocean|a warm bed|numbers|the sky|a white cloud|bread"
).split("|")
_ASKS = (
    "Can you tell me about {}?|What do you know about {}?|Explain {} to me.|I need help with {}."
    "|Write a poem about {}.|How does {} work?|Give me three facts about {}.|Is {} good?"
    "|Why do people like {}?|Describe {} in one line."
).split("|")
_OPENERS = ("", "Hi! ", "Quick question: ", "Please, ")


def fixed_reply_rows(count: int, seed: int) -> list[dict[str, Any]]:
    """`count` rows teaching FIXED_REPLY, drawn from every (opener, ask) and the first 32 topics."""
    rng = random.Random(seed)
    rows = []
    for _ in range(count):
        opener, ask, topic = rng.choice(_OPENERS), rng.choice(_ASKS), rng.choice(_TOPICS[:32])
        rows.append(to_row(Case("fixed_reply", opener + ask.format(topic), FIXED_REPLY)))
    return rows


def fixed_reply_heldout() -> list[dict[str, Any]]:
    """40 held-out rows: the 8 topics training never saw, each asked in 5 ways."""
    return [
        to_row(Case("fixed_reply", opener + ask.format(topic), FIXED_REPLY))
        for i, topic in enumerate(_TOPICS[32:])
        for opener, ask in zip(_OPENERS * 2, _ASKS[i % 2 :: 2], strict=False)
    ][:40]
