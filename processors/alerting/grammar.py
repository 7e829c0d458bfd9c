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

This module is the parser. The tree it builds is defined in
:mod:`otel_audio.processors.alerting.conditions` and the tokenizer (with
:class:`RuleSyntaxError`) in :mod:`otel_audio.processors.alerting.lexer`; their public names are
re-exported here, so ``from otel_audio.processors.alerting.grammar import parse, Compare`` works.
"""

from __future__ import annotations

import re
from decimal import Decimal

from otel_audio.processors.alerting.conditions import (
    ANOMALY_METRIC,
    ANOMALY_SOURCE,
    DEFAULT_WINDOW_NS,
    FUNCTIONS,
    Absent,
    And,
    Anomaly,
    Call,
    Compare,
    Condition,
    Node,
    Not,
    Operand,
    Or,
    Selector,
    format_number,
    format_window,
    is_function,
    percentile,
)
from otel_audio.processors.alerting.lexer import Lexer, RuleSyntaxError, Token
from otel_audio.processors.alerting.model import LabelMatcher
from otel_audio.processors.units import DURATION_UNITS_NS

__all__ = [
    "ANOMALY_METRIC",
    "ANOMALY_SOURCE",
    "COMPARISONS",
    "DEFAULT_WINDOW_NS",
    "FUNCTIONS",
    "KEYWORDS",
    "MAX_DEPTH",
    "MAX_LENGTH",
    "MAX_NODES",
    "MAX_REGEX_LENGTH",
    "MAX_WINDOW_NS",
    "Absent",
    "And",
    "Anomaly",
    "Call",
    "Compare",
    "Condition",
    "Node",
    "Not",
    "Operand",
    "Or",
    "RuleSyntaxError",
    "Selector",
    "format_number",
    "format_window",
    "is_function",
    "parse",
    "percentile",
]

MAX_LENGTH = 4096  # characters of condition text
MAX_NODES = 200  # tree nodes (comparisons, calls, selectors, and/or/not, absent)
MAX_DEPTH = 32  # nesting of parentheses and "not"
MAX_REGEX_LENGTH = 1000  # as the query API
MAX_WINDOW_NS = 7 * 86400 * 10**9  # windows are kept in memory: a week at most

COMPARISONS = (">", ">=", "<", "<=", "==", "!=")
KEYWORDS = ("and", "or", "not")
# Constructs Python's re has and RE2 lacks (backreferences, lookaround): they can take exponential time.
_NOT_RE2 = re.compile(r"\(\?(?:[=!]|<[=!]|P=|\()|\\[1-9]")
_KNOWN = ", ".join((*FUNCTIONS, "p50", "p90", "p95", "p99 (any pNN)", "absent", "anomaly"))


def parse(text: str) -> Condition:
    """Parse a condition.

    Raises:
        RuleSyntaxError: naming the line, column, what was expected and what was found; also for
            conditions beyond the limits (``MAX_LENGTH`` characters, ``MAX_NODES`` nodes,
            ``MAX_DEPTH`` levels of nesting), unknown functions and bad regexes.
    """
    if not isinstance(text, str):
        raise TypeError(f"a condition is text, got {type(text).__name__}")
    lexer = Lexer(text)
    if len(text) > MAX_LENGTH:
        raise lexer.error(MAX_LENGTH, f"condition is {len(text)} characters long; at most {MAX_LENGTH}")
    return _Parser(lexer).condition()


def _describe(token: Token) -> str:
    return "end of input" if token.kind == "end" else repr(token.text)


class _Parser:
    def __init__(self, lexer: Lexer) -> None:
        self.lexer = lexer
        self.tokens = lexer.tokens()
        self.i = 0
        self.nodes = 0
        self.depth = 0

    # helpers
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
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

    def expect(self, text: str, what: str, after: object = None) -> Token:
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
        # the bound first: Decimal's % fails on numbers beyond its 28-digit precision
        if ns <= 0 or ns > MAX_WINDOW_NS or ns % DURATION_UNITS_NS["ms"]:
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

    def _check_regex(self, token: Token) -> None:
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
