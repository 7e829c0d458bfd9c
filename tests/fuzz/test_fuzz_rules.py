"""The alert rule parser under random and mutated text: a Condition or RuleSyntaxError with a place.

The parser's own limits (length, nodes, nesting, regex size and RE2-only constructs) keep every
input bounded; these tests check that no input gets past them as anything but ``RuleSyntaxError``
(line and column 1-based and inside the text, a non-empty reason), and that what parses prints
back to text that parses to the same condition.
"""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from otel_audio.processors.alerting.grammar import MAX_LENGTH, parse
from otel_audio.processors.alerting.lexer import RuleSyntaxError
from tests.fuzz import budget, tried

VALID = [
    "processing_time > 500",
    'p95(audio.stage.duration{audio.stage="denoise"}, 5m) > 0.5 and rate(errors, 5m) > 0.1',
    'avg(x{a="1", b=~"de.*", c!="x", d!~"y|z",}, 300000ms) >= 1.5e3',
    "not (absent(queue.size, 10m) or increase(errors, 1h) >= -2)",
    'anomaly(audio.stage.duration{service="enhancer"})',
    "rate_of_change(process.memory.usage, 12h) > 165.238",
    "max(a, 1w) < 1 or min(b, 250ms) <= 2 and count(c) == 3 and sum(d) != 4 and last(e) > 5",
]
TOKENS = [
    "(", ")", "{", "}", ",", '"', "\\", "=~", "!~", ">=", "<=", "==", "!=", ">", "<", "=", " and ",
    " or ", "not ", "absent(", "anomaly(", "p99(", "p0(", "rate(", "avg(", "5m", "0ms", "99999999w", "-",
    "1e309", "nan", ".", "\n", "\t", "é", "\x00", "(?=x)", "\\1", "(a+)+", "[", "*", "x" * 50,
]  # fmt: skip


@st.composite
def mutated_conditions(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 5))):
        at = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace", "repeat"]))
        piece = draw(st.one_of(st.sampled_from(TOKENS), st.text(max_size=3)))
        if op == "insert":
            text = text[:at] + piece + text[at:]
        elif op == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 6)) :]
        elif op == "replace":
            text = text[:at] + piece + text[at + len(piece) :]
        else:
            text = text[:at] + piece * draw(st.integers(2, 80)) + text[at:]
    return text


def assert_parses_or_names_the_place(text: str) -> None:
    try:
        condition = parse(text)
    except RuleSyntaxError as exc:
        assert exc.reason.strip(), "a refusal says why"
        assert exc.line >= 1 and exc.column >= 1
        assert exc.line <= text.count("\n") + 1, (exc.line, text)
        assert str(exc).startswith(f"line {exc.line}, column {exc.column}: ")
        return
    assert len(text) <= MAX_LENGTH
    assert parse(str(condition)) == condition, "the canonical text means the same condition"


@budget(400)
@given(st.text(max_size=200))
@example("x > ²")  # str.isdigit() is true for '²' and '٣': the lexer once crashed on them
@example("٣")
@example("absent(q, " + "1" * 75 + "h) > 1")  # beyond Decimal's precision: InvalidOperation once
def test_random_text(text: str) -> None:
    tried["rules.random_text"] += 1
    assert_parses_or_names_the_place(text)


@budget(400)
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_random_token_soup(text: str) -> None:
    tried["rules.token_soup"] += 1
    assert_parses_or_names_the_place(text)


@budget(600)
@given(mutated_conditions())
def test_mutated_valid_conditions(text: str) -> None:
    tried["rules.mutated"] += 1
    assert_parses_or_names_the_place(text)


@budget(20)
@given(st.integers(1, 5000), st.sampled_from(["(", "not ", "not (", "-"]))
def test_deep_nesting_hits_the_parsers_limits(depth: int, opener: str) -> None:
    tried["rules.nesting"] += 1
    assert_parses_or_names_the_place(opener * depth + "x > 1" + ")" * depth * opener.count("("))
