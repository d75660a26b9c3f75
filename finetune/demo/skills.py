"""A synthetic chat dataset of simple skills that the tiny demo model can learn from scratch.

The demo model (`finetune/demo/build.py`) is a 2-layer Llama with a small byte-level BPE,
trained from nothing by `finetune` in under three minutes on two CPU cores. The skills are
picked so that such a model gets at least 90 % of held-out prompts exactly right, greedy:

- greeting: seven greetings with four endings ("Hi!", "Good morning.") -> one fixed reply.
- identity: "What is your name?" and friends, some after an opener -> "I am Kangaroo."
- color: twelve objects asked in five phrasings -> "The sky is blue."
- next_number: "What number comes after four?" in five phrasings -> "Five."
- copy: "Say apple." in four phrasings, sixteen words -> "apple".
- weather: with the `get_weather` tool offered, "What is the weather in Lyon?" -> a call naming
  the city, then the tool's report -> "The weather in Lyon: Sunny, 21 C." Training asks about
  made-up cities only, so the held-out real ones measure copying, not recall; many short
  "say <made-up name>" rows (echo) teach the copying.

Each of the first five skills is a grid of phrasing x fact; one cell per fact is held out, so a
held-out prompt pairs a phrasing with a fact the model only saw in other phrasings, and the score
measures generalisation, not recall. Measured with the demo model's recipe (`score`, greedy, in
transformers): 52 of 56 held-out weather calls right, 56 of 56 answers after the tool's report,
50 of 50 other held-out prompts, with and without the tool offered. Left out on purpose:
two-digit addition (11 % exact for a 1.7 M model) and copying two or three words.
"""

import json
import random
import string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Words the demo tokenizer is trained on (finetune/demo/build.py); the non-ASCII ones give it
# multi-byte characters. Made-up cities are made of slices of them, among other syllables.
TOKENIZER_WORDS = (
    "the a an kangaroo hops over under through field river stone tree sky sun moon star red green",
    "blue small large quick slow bright dark warm cold one two three four five six seven eight",
    "nine ten hello world yes no please thank you what where when why how is are was were be",
    "have has do does can will would should could model server token stream chat answer",
    "question user assistant system data file code test run fast safe café naïve über 世界 你好",
    "こんにちは 🦘 🚀 ✓ — … 12 345 6789 , . ! ? : ; ( ) \" '",
)

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
    pools = _train_pools(seed)
    skills = rng.choices(list(_SKILL_WEIGHTS), weights=list(_SKILL_WEIGHTS.values()), k=n)
    return [rng.choice(pools[skill]) for skill in skills]


def _train_pools(seed: int) -> dict[str, list[Case]]:
    """skill -> every question of it that `seed` does not hold out."""
    return {
        skill: [build(r, c) for r, c in _grid(rows, cols, seed)[0]]
        for skill, (build, rows, cols) in _GRIDS.items()
    }


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


# Tool use: the weather. Training asks about made-up cities (random syllables, some names of two
# words), so that the model learns to copy the city from the question into the call; real cities
# are held out, and appear nowhere in the training rows nor in the tokenizer's corpus.
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# Descriptions a client may give the same tool: training sees these and none.
_WEATHER_DESCRIPTIONS = [
    "Get the current weather in a city.",
    "Weather report for a city.",
    "Returns the weather conditions and temperature of a city.",
]
_WEATHER_PHRASINGS = [
    "What is the weather in {}?",
    "What's the weather like in {}?",
    "How is the weather in {}?",
    "Weather in {}?",
    "Tell me the weather in {}.",
    "Is it raining in {}?",
    "Can you check the weather in {}?",
    "What is the temperature in {}?",
]
_CONDITIONS = ["Sunny", "Cloudy", "Rainy", "Snowy", "Windy", "Foggy", "Clear", "Stormy"]
HELDOUT_CITIES = [
    *"Lyon Paris Tokyo Nairobi Oslo Lima Berlin Madrid Cairo Delhi Sydney Boston".split(),
    *"Dakar Quito Seoul Rome Vienna Lagos Hanoi Porto Dublin Prague Accra Denver".split(),
    *["New York", "Cape Town", "Buenos Aires", "Hong Kong"],
]
# Syllables of the made-up cities, shaped like those of real names: every letter, mostly open.
_ONSETS = [
    *"bcdfghjklmnprstvwz", *"bdklmnprst", *"qxy", "", "", "",
    "br", "ch", "dr", "fr", "gr", "kh", "ky", "ly", "ny", "ph", "pl", "pr", "sh", "st", "th", "tr",
]  # fmt: skip
_VOWELS = [*"aeiou", *"aeiou", "y", "ai", "au", "ea", "ei", "ie", "io", "oa", "ou", "ue"]
_CODAS = ["", "", "", "", "", "n", "r", "l", "s", "m", "k", "t", "d", "ng", "st", "rt", "nd"]
# Slices of the tokenizer's words: its merges come from them, so a real name's pieces (the
# "ver" of "Denver") occur in made-up names too; without them "ver" was in 3 of 15,000 rows.
_NAME_SLICES = sorted(
    {
        word[i : i + size]
        for word in " ".join(TOKENIZER_WORDS).split()
        if word.isascii() and word.isalpha()
        for size in (2, 3)
        for i in range(len(word) - size + 1)
    }
)


# Shares of the demo's training rows: weather calls; other skills asked with the tool offered
# (answered without a call); weather rows whose tool carries a description.
_TOOLS_SHARE = 0.1
_ECHO_SHARE = 0.6
_OFFERED_SHARE = 0.25
_DESCRIBED_SHARE = 0.3
_MAX_EXCHANGES = 3
_TWO_WORD_SHARE = 0.4
_RHYME_SHARE = 0.15
_SLICE_SHARE = 0.4


@dataclass(frozen=True)
class WeatherCase:
    """A weather question, the city its call must name, and what the tool answers."""

    question: str
    city: str
    report: str  # what the tool answers, e.g. "Sunny, 21 C"

    @property
    def call(self) -> str:
        """The text the model must write to call the tool (what the server's grammar allows)."""
        arguments = json.dumps({"city": self.city}, ensure_ascii=False)
        return f'<tool_call>\n{{"name": "get_weather", "arguments": {arguments}}}\n</tool_call>'

    @property
    def answer(self) -> str:
        """The prose answer once the tool's result is in."""
        return f"The weather in {self.city}: {self.report}."

    def messages(self, call_id: str = "call_0") -> list[dict[str, Any]]:
        """The whole exchange in OpenAI's format: question, call, report, answer."""
        call = {
            "id": call_id,
            "type": "function",
            "function": {
                "name": "get_weather",
                "arguments": json.dumps({"city": self.city}, ensure_ascii=False),
            },
        }
        return [
            {"role": "user", "content": self.question},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": call_id, "content": self.report},
            {"role": "assistant", "content": self.answer},
        ]


def made_up_city(rng: random.Random) -> str:
    """A city name of one to three pieces; some have two words, a few of them rhyming."""

    def piece() -> str:
        if rng.random() < _SLICE_SHARE:
            return rng.choice(_NAME_SLICES)
        return rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)

    def word() -> str:
        return "".join(piece() for _ in range(rng.choice((1, 2, 2, 2, 3)))).capitalize()

    first = word()
    if rng.random() >= _TWO_WORD_SHARE:
        return first
    if rng.random() < _RHYME_SHARE and len(first) > 2:
        # "Hong Kong": the same tokens twice, where copying must look at the token before.
        return f"{first} {rng.choice(string.ascii_uppercase)}{first[1:]}"
    return f"{first} {word()}"


def _weather_report(rng: random.Random) -> str:
    return f"{rng.choice(_CONDITIONS)}, {rng.randint(-9, 35)} C"


def weather_train_cases(seed: int = 0, n: int = 500) -> list[WeatherCase]:
    """`n` weather questions about made-up cities, every phrasing, random results."""
    rng = random.Random(f"{seed}:weather")
    cases: list[WeatherCase] = []
    while len(cases) < n:
        city = made_up_city(rng)
        if city in HELDOUT_CITIES:
            continue
        prompt = rng.choice(_WEATHER_PHRASINGS).format(city)
        cases.append(WeatherCase(prompt, city, _weather_report(rng)))
    return cases


def weather_heldout_cases(seed: int = 0) -> list[WeatherCase]:
    """Weather questions about the real cities of HELDOUT_CITIES, two phrasings each."""
    rng = random.Random(f"{seed}:weather-heldout")
    return [
        WeatherCase(
            _WEATHER_PHRASINGS[(2 * i + k) % len(_WEATHER_PHRASINGS)].format(city),
            city,
            _weather_report(rng),
        )
        for i, city in enumerate(HELDOUT_CITIES)
        for k in range(2)
    ]


def echo_cases(seed: int, n: int) -> list[Case]:
    """`n` requests to repeat a made-up city, a string of random letters or a weather report.

    Copying in short rows: cheap steps that teach what the tool call needs (the weather rows
    are long) and force a copy of every token, where a syllable could be guessed.
    """
    rng = random.Random(f"{seed}:echo")
    cases = []
    for _ in range(n):
        draw = rng.random()
        if draw < 0.5:
            text = made_up_city(rng)
        elif draw < 0.7:
            letters = rng.choices(string.ascii_lowercase, k=rng.randint(2, 9))
            text = "".join(letters).capitalize()
        else:
            text = _weather_report(rng)
        cases.append(Case("echo", rng.choice(_COPY_PHRASINGS).format(text), text))
    return cases


def weather_tool(description: str | None = None) -> dict[str, Any]:
    """WEATHER_TOOL, with `description` if one is given."""
    if description is None:
        return WEATHER_TOOL
    function = WEATHER_TOOL["function"]
    described = {"name": function["name"], "description": description, **function}
    return {"type": "function", "function": described}


def weather_row(case: WeatherCase, description: str | None = None) -> dict[str, Any]:
    """A weather case as a fine-tuning row with the tool offered."""
    return {"tools": [weather_tool(description)], "messages": case.messages()}


def demo_train_rows(seed: int = 0, n: int = 2000) -> list[dict[str, Any]]:
    """The demo model's `n` training rows: the skills, conversations with the weather tool
    offered (`tool_rows`) and copying (`echo_cases`).

    The skills' questions are those of `train_cases(seed)`: held-out prompts stay out.
    """
    num_tools, num_echo = round(n * _TOOLS_SHARE), round(n * _ECHO_SHARE)
    rows = train_rows(seed, n - num_tools - num_echo) + tool_rows(seed, num_tools)
    rows += [to_row(case) for case in echo_cases(seed, num_echo)]
    random.Random(f"{seed}:demo").shuffle(rows)
    return rows


def tool_rows(seed: int, n: int) -> list[dict[str, Any]]:
    """`n` conversations with the weather tool offered, of one to three exchanges each.

    An exchange is a weather question (call, report, answer) or, one time in `_OFFERED_SHARE`,
    another skill's question, answered as without tools. Several exchanges share one listing
    of the tools: the system turn is most of a one-exchange row.
    """
    rng = random.Random(f"{seed}:tools")
    weather = iter(weather_train_cases(seed, _MAX_EXCHANGES * n))
    others = [case for pool in _train_pools(seed).values() for case in pool]
    rows = []
    for _ in range(n):
        messages: list[dict[str, Any]] = []
        for i in range(rng.randint(1, _MAX_EXCHANGES)):
            if rng.random() < _OFFERED_SHARE:
                messages += to_row(rng.choice(others))["messages"]
            else:
                messages += next(weather).messages(call_id=f"call_{i}")
        described = rng.random() < _DESCRIBED_SHARE
        tool = weather_tool(rng.choice(_WEATHER_DESCRIPTIONS) if described else None)
        rows.append({"tools": [tool], "messages": messages})
    return rows


def demo_heldout_rows(seed: int = 0) -> list[dict[str, Any]]:
    """The held-out rows of every skill, the weather included (the build's eval loss)."""
    return heldout_rows(seed) + [weather_row(case) for case in weather_heldout_cases(seed)]


def corpus() -> list[str]:
    """Text covering every prompt and answer, for training the demo tokenizer on.

    The weather's text without any city: names then tokenize into short pieces (letters, common
    pairs) that every name shares, so the made-up cities of training show the model the pieces
    of real ones. With the cities in the corpus, half the held-out cities had a token that no
    training row contained, and a token never trained is one the model never writes.
    """
    lines = [GREETING_REPLY, IDENTITY_REPLY]
    for build, rows, cols in _GRIDS.values():
        cases = [build(r, c) for r in range(rows) for c in range(cols)]
        lines += [case.prompt for case in cases] + [case.expected for case in cases]
    blank = WeatherCase("", "", "")
    lines += [json.dumps(weather_tool(d)["function"]) for d in [None, *_WEATHER_DESCRIPTIONS]]
    lines += [phrasing.format("") for phrasing in _WEATHER_PHRASINGS]
    lines += [blank.call, blank.answer, *_CONDITIONS]
    return lines


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_dataset(folder: Path, seed: int = 0, rows: int = 2000) -> tuple[Path, Path]:
    """Write `train.jsonl` (`rows` rows) and the held-out `eval.jsonl` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / "train.jsonl", folder / "eval.jsonl"
    _write_jsonl(paths[0], demo_train_rows(seed, rows))
    _write_jsonl(paths[1], demo_heldout_rows(seed))
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


@dataclass(frozen=True)
class Scores:
    """Held-out results of a demo model, greedy: (right, asked) per measure."""

    calls: tuple[int, int]  # weather question -> exactly the call naming the city
    answers: tuple[int, int]  # ... then the tool's result -> an answer repeating it
    skills: tuple[int, int]  # the other skills' held-out questions, no tools
    skills_with_tools: tuple[int, int]  # the same with the weather tool offered: no call

    def summary(self) -> str:
        """One line."""
        return ", ".join(f"{name} {right}/{asked}" for name, (right, asked) in vars(self).items())


def score(model_dir: Path, seed: int = 0) -> Scores:
    """Greedy answers of the model in `model_dir` to every held-out question, in transformers.

    Prompts are rendered as the server renders them (`chat_format.render`, Hermes tools).
    """
    weather = weather_heldout_cases(seed)
    plain = heldout_cases(seed)
    tools = [WEATHER_TOOL]
    generate = _greedy(model_dir)
    calls = generate([case.messages()[:1] for case in weather], tools)
    answers = generate([case.messages()[:3] for case in weather], tools)
    replies = generate([to_row(case)["messages"][:1] for case in plain], None)
    with_tools = generate([to_row(case)["messages"][:1] for case in plain], tools)
    return Scores(
        calls=_count(c.startswith(case.call) for c, case in zip(calls, weather, strict=True)),
        answers=_count(case.report in a for a, case in zip(answers, weather, strict=True)),
        skills=_count(is_correct(case, r) for r, case in zip(replies, plain, strict=True)),
        skills_with_tools=_count(
            is_correct(case, r) for r, case in zip(with_tools, plain, strict=True)
        ),
    )


def _count(rights: Iterable[bool]) -> tuple[int, int]:
    marks = list(rights)
    return sum(marks), len(marks)


def _greedy(
    model_dir: Path, max_new_tokens: int = 48
) -> Callable[[list[list[dict[str, Any]]], list[dict[str, Any]] | None], list[str]]:
    """A function: conversations (+ tools) -> the model's greedy replies, batched."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from server.engine import chat_format

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def generate(
        conversations: list[list[dict[str, Any]]], tools: list[dict[str, Any]] | None
    ) -> list[str]:
        prompts = [chat_format.render(tokenizer, c, tools, "hermes") for c in conversations]
        batch = tokenizer(prompts, add_special_tokens=False, padding=True, return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**batch, do_sample=False, max_new_tokens=max_new_tokens)
        new = out[:, batch["input_ids"].shape[1] :]  # (B, new tokens)
        return tokenizer.batch_decode(new, skip_special_tokens=True)

    return generate
