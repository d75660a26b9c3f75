"""JsonStringGuard: raw control characters inside JSON strings are escaped, wherever the text is
split; everything else, and any valid JSON, passes unchanged."""

import json
import random

import pytest

from server.structured.json_text import JsonStringGuard

CONTROL = [chr(code) for code in range(0x20)]


def guard(*pieces: str) -> str:
    """The guarded text of `pieces`, fed in order to one guard."""
    fixer = JsonStringGuard()
    return "".join(fixer.feed(piece) for piece in pieces)


def raw_json_string(value: str) -> str:
    """`value` as xgrammar#800 emits it: `"` and `\\` escaped, control characters left raw."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def splits(text: str) -> list[tuple[str, ...]]:
    """`text` cut into two pieces at every position, and into three at a sample of positions."""
    cuts: list[tuple[str, ...]] = [(text[:i], text[i:]) for i in range(len(text) + 1)]
    rng = random.Random(len(text))
    for _ in range(50):
        i, j = sorted(rng.randint(0, len(text)) for _ in range(2))
        cuts.append((text[:i], text[i:j], text[j:]))
    return cuts


@pytest.mark.parametrize("char", CONTROL, ids=[f"U+{ord(c):04X}" for c in CONTROL])
def test_each_control_character_is_escaped_inside_a_string(char: str) -> None:
    text = '{"k": "a' + char + 'b"}'
    fixed = guard(text)
    assert json.loads(fixed) == {"k": f"a{char}b"}
    assert fixed == json.dumps({"k": f"a{char}b"})


def test_short_escapes_are_used_where_json_has_them() -> None:
    assert guard('"\b\t\n\f\r\x00\x1f"') == '"\\b\\t\\n\\f\\r\\u0000\\u001f"'


def test_keys_are_strings_too() -> None:
    assert guard('{"a\tb": 1}') == '{"a\\tb": 1}'


@pytest.mark.parametrize(
    "text",
    [
        '{"a": "x\ty", "b": ["\n", "q\\"\r"], "c\x01": "\\\\\x02"}',
        '["\\u0041\n", "\\\\", "\\"", "\\/\t"]',
        '"a\\"b\nc"',
        '{"emoji": "😀\x1b", "n": -1.5e3, "t": true, "z": null}',
    ],
)
def test_split_anywhere_gives_the_same_text(text: str) -> None:
    whole = guard(text)
    json.loads(whole)  # valid once fixed
    for pieces in splits(text):
        assert guard(*pieces) == whole, pieces


def test_escaped_quotes_and_backslashes_keep_the_string_state() -> None:
    # The escaped quote does not end the string: the newline after it is inside.
    assert guard('"a\\"b\n"') == '"a\\"b\\n"'
    # An escaped backslash does not escape the quote after it: the string ends there.
    assert guard('["a\\\\"\n,"\n"]') == '["a\\\\"\n,"\\n"]'
    # Split right after the backslash.
    assert guard('"a\\', '"\n"') == '"a\\"\\n"'


def test_text_outside_strings_passes_unchanged() -> None:
    text = '{\n\t"a" :\r\n 1 ,\n  "b":[ 1,\t2 ]\n}\n'
    assert guard(text) == text
    for pieces in splits(text):
        assert guard(*pieces) == text


@pytest.mark.parametrize("indent", [None, 2, "\t"])
def test_valid_json_passes_unchanged(indent: int | str | None) -> None:
    value = {
        "text": 'line\nbreak\ttab "quoted" back\\slash \x00 \x1f é 😀 \u2028',
        "list": ["", "\\", '"', "\\u0041", 1, 2.5, None, True, {"nested": ["\r\n"]}],
        "key\nwith\tcontrols": "v",
    }
    for ensure_ascii in (True, False):
        text = json.dumps(value, indent=indent, ensure_ascii=ensure_ascii)
        assert guard(text) == text
        for pieces in splits(text)[:: max(1, len(text) // 40)]:
            assert guard(*pieces) == text


def test_random_strings_with_raw_controls_round_trip() -> None:
    rng = random.Random(800)
    alphabet = [*CONTROL, "a", "é", "😀", '"', "\\", " ", "/", "u"]
    for _ in range(200):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        raw = '{"k": ' + raw_json_string(value) + "}"
        cut = rng.randint(0, len(raw))
        fixed = guard(raw[:cut], raw[cut:])
        assert json.loads(fixed) == {"k": value}
        assert fixed == json.dumps({"k": value}, ensure_ascii=False)


def test_each_guard_keeps_its_own_state() -> None:
    first, second = JsonStringGuard(), JsonStringGuard()
    assert first.feed('{"a": "x') == '{"a": "x'
    assert second.feed("\n") == "\n"  # outside any string for this one
    assert first.feed('\n"}') == '\\n"}'
