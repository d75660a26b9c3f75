"""Keep JSON strings valid as structured output streams out: no raw control characters in them.

xgrammar 0.2.8 lets raw U+0000–U+001F characters into JSON strings whose schema has `maxLength`,
`minLength` or `pattern` (xgrammar#800, measured: `{"type": "string", "maxLength": 12}` accepts a
raw tab). JSON forbids them there, so `json.loads` and pydantic (hence `openai`'s `.parse()`)
refuse the whole output. `JsonStringGuard` escapes them as the text streams, keeping what the
string means; it never changes text that is already valid JSON, where no such character can be
inside a string.
"""

from __future__ import annotations

import re

# The short escapes JSON has for control characters; the others become \u00XX.
_SHORT_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
# Inside a string: where its state changes (a quote, a backslash) or a fix is needed.
_IN_STRING_SPECIAL = re.compile(r'["\\\x00-\x1f]')


def _escape(char: str) -> str:
    return _SHORT_ESCAPES.get(char) or f"\\u{ord(char):04x}"


class JsonStringGuard:
    """Escapes raw control characters inside JSON strings of text that arrives in pieces.

    Feed each piece of one JSON text in order; the state (inside a string, just after a
    backslash) carries over between pieces, so a piece may end anywhere. Outside strings the
    text passes unchanged: whitespace between tokens is legal JSON.
    """

    def __init__(self) -> None:
        self._in_string = False
        self._after_backslash = False

    def feed(self, text: str) -> str:
        """The piece `text`, with raw control characters inside strings escaped."""
        out: list[str] = []
        start = i = 0
        while i < len(text):
            if self._after_backslash:
                # The escaped character, whatever it is: JSON escapes are one character long
                # after the backslash (`\uXXXX`'s hex digits are plain string characters).
                self._after_backslash = False
                i += 1
            elif not self._in_string:
                quote = text.find('"', i)
                if quote < 0:
                    break
                self._in_string, i = True, quote + 1
            else:
                match = _IN_STRING_SPECIAL.search(text, i)
                if match is None:
                    break
                char, i = match.group(), match.end()
                if char == '"':
                    self._in_string = False
                elif char == "\\":
                    self._after_backslash = True
                else:
                    out.append(text[start : i - 1])
                    out.append(_escape(char))
                    start = i
        out.append(text[start:])
        return "".join(out)
