"""The condition language of alert rules: a hand-written tokenizer and recursive-descent parser.

A rule's condition is text a user wrote (YAML config, the API, ``ProductionMonitor``); it is parsed
into a small tree of frozen dataclasses and never reaches ``eval``, ``exec`` or the ``ast`` module.
``docs/alerting-rules.md`` is the language reference. In short::

    condition  := or_expr
    or_expr    := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*               # and binds tighter than or
    not_expr   := "not" not_expr | primary
    primary    := "(" or_expr ")" | "absent" "(" selector ["," window] ")" | operand compare number
    operand    := function "(" selector ["," window] ")" | "anomaly" "(" selector ")" | selector
    function   := avg | min | max | sum | count | last | rate | increase | rate_of_change | pNN
    selector   := metric ["{" matcher ("," matcher)* [","] "}"]
    matcher    := label ("=" | "!=" | "=~" | "!~") "quoted value"
    compare    := > | >= | < | <= | == | !=

Example::

    cond = parse('p95(audio.stage.duration{audio.stage="denoise"}, 5m) > 0.5 and rate(errors, 5m) > 0.1')
    cond.metrics            # frozenset({'audio.stage.duration', 'errors'})
    str(cond)               # canonical text; parse(str(cond)) == cond

Every syntax error is a :class:`RuleSyntaxError` (a ``ValueError``) naming the line and column
(1-based), what was expected and what was found.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from decimal import Decimal

from otel_audio.processors.alerting.model import LabelMatcher
from otel_audio.processors.units import DURATION_UNITS_NS

MAX_LENGTH = 4096  # characters of condition text
MAX_NODES = 200  # tree nodes (comparisons, calls, selectors, and/or/not, absent)
MAX_DEPTH = 32  # nesting of parentheses and "not"
MAX_REGEX_LENGTH = 1000  # as the query API
MAX_WINDOW_NS = 7 * 86400 * 10**9  # windows are kept in memory: a week at most
DEFAULT_WINDOW_NS = 5 * 60 * 10**9  # window of a call without one, and the lookback of bare selectors

FUNCTIONS = ("avg", "min", "max", "sum", "count", "last", "rate", "increase", "rate_of_change")
COMPARISONS = (">", ">=", "<", "<=", "==", "!=")
KEYWORDS = ("and", "or", "not")
_PERCENTILE = re.compile(r"p(100|\d{1,2}(?:\.\d+)?)")
# Constructs Python's re has and RE2 lacks (backreferences, lookaround): they can take exponential time.
_NOT_RE2 = re.compile(r"\(\?(?:[=!]|<[=!]|P=|\()|\\[1-9]")
_KNOWN = ", ".join((*FUNCTIONS, "p50", "p90", "p95", "p99 (any pNN)", "absent", "anomaly"))


class RuleSyntaxError(ValueError):
    """A condition that does not parse; ``line`` and ``column`` are 1-based."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(f"line {line}, column {column}: {message}")
        self.line, self.column, self.reason = line, column, message


# -- the tree --------------------------------------------------------------------------------------


class Node:
    """Common to every tree node: the metric names it reads."""

    @property
    def metrics(self) -> frozenset[str]:
        raise NotImplementedError


@dataclass(frozen=True)
class Selector(Node):
    """``metric{label="value",...}``: the series of one metric whose labels match every matcher."""

    metric: str
    matchers: tuple[LabelMatcher, ...] = ()

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset((self.metric,))

    def __str__(self) -> str:
        if not self.matchers:
            return self.metric
        inner = ",".join(f'{m.name}{m.op}"{_quote(m.value)}"' for m in self.matchers)
        return f"{self.metric}{{{inner}}}"


@dataclass(frozen=True)
class Call(Node):
    """``func(selector, window)``: a function of each selected series over ``(now - window, now]``."""

    func: str
    selector: Selector
    window_ns: int = DEFAULT_WINDOW_NS

    @property
    def metrics(self) -> frozenset[str]:
        return self.selector.metrics

    def __str__(self) -> str:
        return f"{self.func}({self.selector}, {format_window(self.window_ns)})"


ANOMALY_METRIC = "anomaly.score"  # the anomaly processor's score series ...
ANOMALY_SOURCE = "anomaly.metric"  # ... and its attribute naming the scored metric


@dataclass(frozen=True)
class Anomaly(Node):
    """``anomaly(selector)``: the latest ``anomaly.score`` of the selected metric's series."""

    selector: Selector

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset((ANOMALY_METRIC,))

    def score_selector(self) -> Selector:
        """The score series this reads: ``anomaly.score{anomaly.metric="<metric>", <matchers>}``."""
        source = LabelMatcher(ANOMALY_SOURCE, "=", self.selector.metric)
        return Selector(ANOMALY_METRIC, (source, *self.selector.matchers))

    def __str__(self) -> str:
        return f"anomaly({self.selector})"


Operand = Call | Anomaly | Selector


class Condition(Node):
    """A parsed condition: :class:`Compare`, :class:`Absent`, :class:`And`, :class:`Or` or :class:`Not`."""


@dataclass(frozen=True)
class Compare(Condition):
    """``operand op number``; a bare selector operand is the series' latest value."""

    operand: Operand
    op: str
    number: float

    @property
    def metrics(self) -> frozenset[str]:
        return self.operand.metrics

    def __str__(self) -> str:
        return f"{self.operand} {self.op} {format_number(self.number)}"


@dataclass(frozen=True)
class Absent(Condition):
    """``absent(selector, window)``: no selected series has a point in the window."""

    selector: Selector
    window_ns: int = DEFAULT_WINDOW_NS

    @property
    def metrics(self) -> frozenset[str]:
        return self.selector.metrics

    def __str__(self) -> str:
        return f"absent({self.selector}, {format_window(self.window_ns)})"


@dataclass(frozen=True)
class And(Condition):
    left: Condition
    right: Condition

    @property
    def metrics(self) -> frozenset[str]:
        return self.left.metrics | self.right.metrics

    def __str__(self) -> str:
        left = f"({self.left})" if isinstance(self.left, Or) else str(self.left)
        right = f"({self.right})" if isinstance(self.right, Or | And) else str(self.right)
        return f"{left} and {right}"


@dataclass(frozen=True)
class Or(Condition):
    left: Condition
    right: Condition

    @property
    def metrics(self) -> frozenset[str]:
        return self.left.metrics | self.right.metrics

    def __str__(self) -> str:
        right = f"({self.right})" if isinstance(self.right, Or) else str(self.right)
        return f"{self.left} or {right}"


@dataclass(frozen=True)
class Not(Condition):
    operand: Condition

    @property
    def metrics(self) -> frozenset[str]:
        return self.operand.metrics

    def __str__(self) -> str:
        inner = f"({self.operand})" if isinstance(self.operand, And | Or) else str(self.operand)
        return f"not {inner}"


def format_number(x: float) -> str:
    """The shortest text that reads back as ``x`` (``0.5``, ``500``, ``1e+16``)."""
    text = repr(float(x))
    return text[:-2] if text.endswith(".0") else text


def format_window(ns: int) -> str:
    """The largest unit that divides ``ns`` exactly: ``5m``, ``90s``, ``1500ms``, ``1w``."""
    for unit in ("w", "d", "h", "m", "s"):
        if ns % DURATION_UNITS_NS[unit] == 0:
            return f"{ns // DURATION_UNITS_NS[unit]}{unit}"
    return f"{ns // DURATION_UNITS_NS['ms']}ms"


def is_function(name: str) -> bool:
    """Whether ``name(...)`` is an allowed function: the fixed names or a percentile pNN / pNN.N."""
    match = _PERCENTILE.fullmatch(name)
    return name in FUNCTIONS or (match is not None and 0 < float(match.group(1)) <= 100)


@functools.lru_cache(maxsize=1024)
def percentile(func: str) -> float | None:
    """The quantile of a percentile function (``p95`` -> 0.95); None for the others."""
    match = _PERCENTILE.fullmatch(func)
    return float(match.group(1)) / 100 if match else None


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


# -- tokens ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Token:
    kind: str  # name, number, duration, string, op, punct, end
    text: str
    pos: int  # offset in the condition text
    value: object = None


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")  # label names may hold '-' (as in the rulegen docs)
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?")
_UNIT = re.compile(r"(ms|s|m|h|d|w)(?![A-Za-z0-9_.])")
_OPS = ("=~", "!~", ">=", "<=", "==", "!=", ">", "<", "=")
_ESCAPES = {'"': '"', "\\": "\\"}


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text

    def error(self, pos: int, message: str) -> RuleSyntaxError:
        line = self.text.count("\n", 0, pos) + 1
        column = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        return RuleSyntaxError(message, line, column)

    def tokens(self) -> list[_Token]:
        text, pos, out, in_braces = self.text, 0, [], False
        while True:
            while pos < len(text) and text[pos].isspace():
                pos += 1
            if pos >= len(text):
                out.append(_Token("end", "", pos))
                return out
            char = text[pos]
            match = (_LABEL if in_braces else _NAME).match(text, pos)
            if match:
                out.append(_Token("name", match.group(), pos))
            elif char.isdigit() or (char == "-" and text[pos + 1 : pos + 2].isdigit()):
                out.append(self._number(pos))
            elif char == '"':
                out.append(self._string(pos))
            elif char in "(){},":
                in_braces = (in_braces or char == "{") and char != "}"
                out.append(_Token("punct", char, pos))
            else:
                op = next((o for o in _OPS if text.startswith(o, pos)), None)
                if op is None:
                    raise self.error(pos, f"unexpected character {char!r}")
                out.append(_Token("op", op, pos))
            pos += len(out[-1].text)

    def _number(self, pos: int) -> _Token:
        match = _NUMBER.match(self.text, pos)
        end = match.end()
        unit = _UNIT.match(self.text, end)
        if unit and not match.group(2) and not match.group().startswith("-"):
            number = Decimal(match.group())
            ns = number * DURATION_UNITS_NS[unit.group()]
            return _Token("duration", self.text[pos : unit.end()], pos, ns)
        if end < len(self.text) and (self.text[end].isalnum() or self.text[end] in "_."):
            word = re.match(r"[A-Za-z0-9_.]*", self.text[pos:]).group() or self.text[pos]
            raise self.error(
                pos, f"bad number or duration {word!r}: durations are like 500ms, 30s, 5m, 1h, 1d, 1w"
            )
        value = float(match.group())
        if not math.isfinite(value):
            raise self.error(pos, f"number {match.group()} is out of range")
        return _Token("number", match.group(), pos, value)

    def _string(self, pos: int) -> _Token:
        text, i, chars = self.text, pos + 1, []
        while i < len(text):
            char = text[i]
            if char == '"':
                return _Token("string", text[pos : i + 1], pos, "".join(chars))
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


# -- the parser ------------------------------------------------------------------------------------


def parse(text: str) -> Condition:
    """Parse a condition.

    Raises:
        RuleSyntaxError: naming the line, column, what was expected and what was found; also for
            conditions beyond the limits (``MAX_LENGTH`` characters, ``MAX_NODES`` nodes,
            ``MAX_DEPTH`` levels of nesting), unknown functions and bad regexes.
    """
    if not isinstance(text, str):
        raise TypeError(f"a condition is text, got {type(text).__name__}")
    lexer = _Lexer(text)
    if len(text) > MAX_LENGTH:
        raise lexer.error(MAX_LENGTH, f"condition is {len(text)} characters long; at most {MAX_LENGTH}")
    return _Parser(lexer).condition()


def _describe(token: _Token) -> str:
    return "end of input" if token.kind == "end" else repr(token.text)


class _Parser:
    def __init__(self, lexer: _Lexer) -> None:
        self.lexer = lexer
        self.tokens = lexer.tokens()
        self.i = 0
        self.nodes = 0
        self.depth = 0

    # helpers
    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> _Token:
        token = self.peek()
        self.i += 1
        return token

    def at(self, text: str, ahead: int = 0) -> bool:
        token = self.peek(ahead)
        return token.kind in ("punct", "op", "name") and token.text == text

    def fail(self, expected: str, after: object = None) -> RuleSyntaxError:
        token = self.peek()
        where = f" after {after}" if after is not None else ""
        return self.lexer.error(token.pos, f"expected {expected}{where}, found {_describe(token)}")

    def expect(self, text: str, what: str, after: object = None) -> _Token:
        if not self.at(text):
            raise self.fail(what, after)
        return self.take()

    def node(self, value, pos: int):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise self.lexer.error(pos, f"condition has more than {MAX_NODES} nodes; split it into rules")
        return value

    def nest(self, pos: int) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.lexer.error(pos, f"condition nests deeper than {MAX_DEPTH} levels")

    # grammar
    def condition(self) -> Condition:
        cond = self.or_expr()
        if self.peek().kind != "end":
            raise self.fail("'and', 'or' or end of input", cond)
        return cond

    def or_expr(self) -> Condition:
        left = self.and_expr()
        while self.at("or"):
            pos = self.take().pos
            left = self.node(Or(left, self.and_expr()), pos)
        return left

    def and_expr(self) -> Condition:
        left = self.not_expr()
        while self.at("and"):
            pos = self.take().pos
            left = self.node(And(left, self.not_expr()), pos)
        return left

    def not_expr(self) -> Condition:
        if self.at("not"):
            pos = self.take().pos
            self.nest(pos)
            inner = self.not_expr()
            self.depth -= 1
            return self.node(Not(inner), pos)
        return self.primary()

    def primary(self) -> Condition:
        token = self.peek()
        if self.at("("):
            self.nest(self.take().pos)
            inner = self.or_expr()
            self.expect(")", "')' closing the '(' at " + self._where(token.pos), inner)
            self.depth -= 1
            return inner
        if token.kind != "name" or token.text in KEYWORDS:
            raise self.fail("a condition: a comparison like avg(m, 5m) > 1 or m > 1, absent(m), not, or '('")
        if token.text == "absent" and self.at("(", 1):
            self.i += 2
            selector = self.selector()
            window = self.window(f"absent({selector}")
            self.expect(")", "')'", f"absent({selector}, {format_window(window)}")
            return self.node(Absent(selector, window), token.pos)
        operand = self.operand()
        if not (self.peek().kind == "op" and self.peek().text in COMPARISONS):
            raise self.fail("a comparison (>, >=, <, <=, ==, !=)", operand)
        op = self.take().text
        number = self.peek()
        if number.kind != "number":
            raise self.fail("a number", f"{operand} {op}")
        self.take()
        return self.node(Compare(operand, op, number.value), token.pos)

    def operand(self) -> Operand:
        token = self.peek()
        if not self.at("(", 1):
            return self.selector()
        name = token.text
        if name == "anomaly":
            self.i += 2
            selector = self.selector()
            self.expect(")", "')' (anomaly takes a selector only)", f"anomaly({selector}")
            return self.node(Anomaly(selector), token.pos)
        if not is_function(name):
            raise self.lexer.error(token.pos, f"unknown function {name}; known: {_KNOWN}")
        self.i += 2
        selector = self.selector()
        window = self.window(f"{name}({selector}")
        self.expect(")", "')'", f"{name}({selector}, {format_window(window)}")
        return self.node(Call(name, selector, window), token.pos)

    def window(self, after: str) -> int:
        if not self.at(","):
            if self.at(")"):
                return DEFAULT_WINDOW_NS
            raise self.fail("',' and a window, or ')'", after)
        self.take()
        token = self.peek()
        if token.kind == "number" and not token.text.startswith("-") and "e" not in token.text.lower():
            ns = Decimal(token.text) * DURATION_UNITS_NS["s"]  # plain numbers are seconds, as in units.py
        elif token.kind == "duration":
            ns = token.value
        else:
            raise self.fail("a window (a duration like 500ms, 30s, 5m, 1h, 1d, 1w)", after)
        if ns <= 0 or ns % DURATION_UNITS_NS["ms"] or ns > MAX_WINDOW_NS:
            raise self.lexer.error(
                token.pos, f"window {token.text} must be a whole number of milliseconds from 1ms to 1w"
            )
        self.take()
        return int(ns)

    def selector(self) -> Selector:
        token = self.peek()
        if token.kind != "name" or token.text in KEYWORDS or self.at("(", 1):
            raise self.fail("a metric name")
        self.take()
        matchers: list[LabelMatcher] = []
        if self.at("{"):
            self.take()
            while True:
                matchers.append(self.matcher(token.text))
                if self.at(","):
                    self.take()
                    if self.at("}"):
                        break
                elif not self.at("}"):
                    raise self.fail("',' or '}'", Selector(token.text, tuple(matchers)))
                else:
                    break
            self.take()
        return self.node(Selector(token.text, tuple(matchers)), token.pos)

    def matcher(self, metric: str) -> LabelMatcher:
        label = self.peek()
        if label.kind != "name":
            raise self.fail("a label name", f"{metric}{{")
        self.take()
        op = self.peek()
        if op.kind != "op" or op.text not in ("=", "!=", "=~", "!~"):
            raise self.fail("one of = != =~ !~", label.text)
        self.take()
        value = self.peek()
        if value.kind != "string":
            raise self.fail('a quoted value like "denoise"', f"{label.text}{op.text}")
        self.take()
        if op.text in ("=~", "!~"):
            self._check_regex(value)
        return LabelMatcher(label.text, op.text, value.value)

    def _check_regex(self, token: _Token) -> None:
        pattern, at = token.value, token.pos
        if len(pattern) > MAX_REGEX_LENGTH:
            raise self.lexer.error(at, f"regex is {len(pattern)} characters; at most {MAX_REGEX_LENGTH}")
        if _NOT_RE2.search(pattern):
            raise self.lexer.error(at, f"regex {pattern!r} uses lookaround or backreferences (RE2 only)")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise self.lexer.error(at, f"bad regex {pattern!r}: {exc}") from None

    def _where(self, pos: int) -> str:
        error = self.lexer.error(pos, "")
        return f"line {error.line}, column {error.column}"
