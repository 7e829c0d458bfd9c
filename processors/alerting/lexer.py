"""The tokenizer of alert conditions, and the syntax error every stage of parsing raises.

:class:`Lexer` turns condition text into tokens (:class:`Token`): names (metric, label and function
names, keywords), numbers, durations (``500ms`` .. ``1w``, exact as :class:`~decimal.Decimal`
nanoseconds), quoted strings (only ``\\"`` and ``\\\\`` are escapes), operators and
punctuation. Inside ``{...}`` a name may hold ``-`` (label names). :meth:`Lexer.error` turns an
offset into the 1-based line and column of a :class:`RuleSyntaxError`.

Kept apart from the recursive-descent parser (:mod:`otel_audio.processors.alerting.grammar`),
which consumes the tokens: this module decides what the characters are, that one what they mean.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal

from otel_audio.processors.units import DURATION_UNITS_NS


class RuleSyntaxError(ValueError):
    """A condition that does not parse; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.line, self.column, self.reason = line, column, message


@dataclass(frozen=True)
class Token:
    """One token of condition text, at offset ``pos``; ``value`` is a number's, duration's or string's."""

    kind: str  # name, number, duration, string, op, punct, end
    text: str
    pos: int  # offset in the condition text
    value: object = None


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")  # label names may hold '-' (as in the rulegen docs)
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")  # ASCII digits: str.isdigit() takes '²', '٣'
_DIGITS = frozenset("0123456789")
_UNIT = re.compile(r"(ms|s|m|h|d|w)(?![A-Za-z0-9_.])")
_OPS = ("=~", "!~", ">=", "<=", "==", "!=", ">", "<", "=")
_ESCAPES = {'"': '"', "\\": "\\"}


class Lexer:
    """Splits one condition's text into tokens; ``error`` locates a syntax error in it."""

    def __init__(self, text: str) -> None:
        self.text = text

    def error(self, pos: int, message: str) -> RuleSyntaxError:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return RuleSyntaxError(message, line, column)

    def tokens(self) -> list[Token]:
        text, pos, out, in_braces = self.text, 0, [], False
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                out.append(Token("end", "", pos))
                return out
            char = text[pos]
            match = (_LABEL if in_braces else _NAME).match(text, pos)
            if match:
                out.append(Token("name", match.group(), pos))
            elif char in _DIGITS or (char == "-" and text[pos + 1 : pos + 2] in _DIGITS):
                out.append(self._number(pos))
            elif char == '"':
                out.append(self._string(pos))
            elif char in "(){},":
                in_braces = (in_braces or char == "{") and char != "}"
                out.append(Token("punct", char, pos))
            else:
                op = next((o for o in _OPS if text.startswith(o, pos)), None)
                if op is None:
                    raise self.error(pos, f"unexpected character {char!r}")
                out.append(Token("op", op, pos))
            pos += len(out[-1].text)

    def _number(self, pos: int) -> Token:
        match = _NUMBER.match(self.text, pos)
        end = match.end()
        unit = _UNIT.match(self.text, end)
        if unit and not match.group(2) and not match.group().startswith("-"):
            number = Decimal(match.group())
            ns = number * DURATION_UNITS_NS[unit.group()]
            return Token("duration", self.text[pos : unit.end()], pos, ns)
        if end < len(self.text) and (self.text[end].isalnum() or self.text[end] in "_."):
            word = re.match(r"[A-Za-z0-9_.]*", self.text[pos:]).group() or self.text[pos]
            raise self.error(
                pos, f"bad number or duration {word!r}: durations are like 500ms, 30s, 5m, 1h, 1d, 1w"
            )
        value = float(match.group())
        if not math.isfinite(value):
            raise self.error(pos, f"number {match.group()} is out of range")
        return Token("number", match.group(), pos, value)

    def _string(self, pos: int) -> Token:
        text, i, chars = self.text, pos + 1, []
        while i < len(text):
            char = text[i]
            if char == '"':
                return Token("string", text[pos : i + 1], pos, "".join(chars))
            if char == "\\":
                escaped = text[i + 1 : i + 2]
                if escaped not in _ESCAPES:
                    raise self.error(
                        i, f'unknown escape \\{escaped} in a quoted value; only \\" and \\\\ are escapes'
                    )
                chars.append(_ESCAPES[escaped])
                i += 2
                continue
            chars.append(char)
            i += 1
        raise self.error(pos, 'unterminated string: a quoted value needs a closing "')
