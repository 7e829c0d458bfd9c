"""The alert condition grammar: what parses to what, what the suggester writes, hostile input, limits."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_audio.processors import rulegen
from otel_audio.processors.alerting.grammar import (
    DEFAULT_WINDOW_NS,
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_NODES,
    Absent,
    And,
    Anomaly,
    Call,
    Compare,
    Not,
    Or,
    RuleSyntaxError,
    Selector,
    parse,
)
from otel_audio.processors.alerting.model import LabelMatcher

S, M, H, D = 10**9, 60 * 10**9, 3600 * 10**9, 86400 * 10**9


def cmp(operand, op=">", number=1.0) -> Compare:
    return Compare(operand, op, number)


def sel(metric: str, *matchers: tuple[str, str, str]) -> Selector:
    return Selector(metric, tuple(LabelMatcher(*m) for m in matchers))


def error_of(text: str) -> RuleSyntaxError:
    with pytest.raises(RuleSyntaxError) as info:
        parse(text)
    return info.value


# -- the grammar -------------------------------------------------------------------------------------


def test_a_bare_metric_compares_its_latest_value():
    assert parse("processing_time > 500") == cmp(sel("processing_time"), ">", 500.0)


@pytest.mark.parametrize(
    "func",
    ["avg", "min", "max", "sum", "count", "last", "rate", "increase", "rate_of_change", "p50", "p99.9"],
)
def test_every_function_takes_a_selector_and_a_window(func):
    assert parse(f"{func}(x, 30s) < 2") == cmp(Call(func, sel("x"), 30 * S), "<", 2.0)


def test_the_window_defaults_to_5m():
    assert parse("avg(x) > 1") == cmp(Call("avg", sel("x"), DEFAULT_WINDOW_NS))


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("500ms", 500 * 10**6),
        ("30s", 30 * S),
        ("5m", 5 * M),
        ("1h", H),
        ("1d", D),
        ("1w", 7 * D),
        ("1.5m", 90 * S),
    ],
)
def test_windows_use_the_duration_units(text, ns):
    assert parse(f"rate(x, {text}) > 1").operand.window_ns == ns


def test_a_plain_number_window_is_seconds():
    assert parse("rate(x, 90) > 1").operand.window_ns == 90 * S


@pytest.mark.parametrize("op", [">", ">=", "<", "<=", "==", "!="])
def test_every_comparison(op):
    assert parse(f"x {op} 1").op == op


@pytest.mark.parametrize(
    ("text", "value"), [("-2", -2.0), ("0.25", 0.25), ("1e3", 1000.0), ("2.5E-3", 0.0025)]
)
def test_numbers_may_be_negative_and_have_exponents(text, value):
    assert parse(f"x > {text}").number == value


def test_matchers_take_all_four_operators_and_a_trailing_comma():
    cond = parse('m{a="1", b!="2", c=~"x.*", d!~"y|z",} > 0')
    assert cond.operand == sel("m", ("a", "=", "1"), ("b", "!=", "2"), ("c", "=~", "x.*"), ("d", "!~", "y|z"))


def test_quoted_values_unescape_quotes_and_backslashes():
    assert parse(r'm{note="a\"b\\c"} > 0').operand.matchers[0].value == 'a"b\\c'


def test_metric_and_label_names_may_hold_dots_and_labels_dashes():
    assert parse('audio.stage.duration{k8s.pod-name="p"} > 0').operand == sel(
        "audio.stage.duration", ("k8s.pod-name", "=", "p")
    )


def test_and_binds_tighter_than_or():
    a, b, c = (cmp(sel(n)) for n in "abc")
    assert parse("a > 1 or b > 1 and c > 1") == Or(a, And(b, c))
    assert parse("(a > 1 or b > 1) and c > 1") == And(Or(a, b), c)


def test_and_and_or_group_from_the_left():
    a, b, c = (cmp(sel(n)) for n in "abc")
    assert parse("a > 1 and b > 1 and c > 1") == And(And(a, b), c)


def test_not_applies_to_the_comparison_after_it():
    a, b = cmp(sel("a")), cmp(sel("b"))
    assert parse("not a > 1 and b > 1") == And(Not(a), b)
    assert parse("not not a > 1") == Not(Not(a))


def test_absent_takes_a_selector_and_an_optional_window():
    assert parse('absent(heartbeat{service="enh"})') == Absent(
        sel("heartbeat", ("service", "=", "enh")), 5 * M
    )
    assert parse("absent(heartbeat, 10m)") == Absent(sel("heartbeat"), 10 * M)


def test_anomaly_reads_the_score_series_of_the_metric():
    cond = parse('anomaly(quality_score{stage="x"}) > 0.9')
    assert cond == cmp(Anomaly(sel("quality_score", ("stage", "=", "x"))), ">", 0.9)
    assert cond.metrics == {"anomaly.score"}
    assert cond.operand.score_selector() == sel(
        "anomaly.score", ("anomaly.metric", "=", "quality_score"), ("stage", "=", "x")
    )


def test_a_function_name_without_parentheses_is_a_metric():
    assert parse("count > 3") == cmp(sel("count"), ">", 3.0)


def test_conditions_may_span_lines():
    assert parse("avg(a, 1m) > 1\n  and\n  rate(b, 1m) > 2").metrics == {"a", "b"}


def test_metrics_names_every_metric_read():
    cond = parse("p95(a, 5m) > 1 and (rate(b, 1m) > 0 or not absent(c)) and d > 2")
    assert cond.metrics == {"a", "b", "c", "d"}


def test_canonical_text_writes_the_window_and_the_shortest_number():
    cond = parse('avg( x{a = "1" ,} ,300000ms)>=1.50')
    assert str(cond) == 'avg(x{a="1"}, 5m) >= 1.5'


# -- what the suggester writes ---------------------------------------------------------------------

DOCUMENTED = [
    'avg(audio.stage.duration{audio.stage="denoise"}, 1m) > 0.630802',
    'avg(audio.stage.duration{audio.stage="denoise"}, 1m) > 0.527748 and '
    'avg(audio.queue.size{audio.stage="denoise"}, 1m) > 16.0486',
    "avg(process.memory.usage, 5m) > 1402760000",
    "rate_of_change(process.memory.usage, 12h) > 165.238",
    "avg(audio.stage.duration, 1m) > 0.5573",
]


@pytest.mark.parametrize("text", DOCUMENTED)
def test_every_condition_in_the_rulegen_docs_parses_and_prints_back_unchanged(text):
    assert str(parse(text)) == text


def _times(n: int, step: int = M) -> np.ndarray:
    return 1_795_000_000 * S + step * np.arange(n)


def _term_parts(term: Compare) -> tuple:
    call = term.operand
    return call.func, call.selector.metric, call.window_ns, call.selector.matchers, term.op, term.number


@pytest.mark.parametrize("fn", rulegen.FUNCTIONS)
@pytest.mark.parametrize("direction", rulegen.DIRECTIONS)
def test_every_condition_the_suggester_writes_parses_to_what_it_means(fn, direction):
    rng = np.random.default_rng(1)
    n = 600
    load = rng.lognormal(0.0, 0.5, n)
    matchers = (("audio.stage", "=", 'de"noise\\'), ("service", "=~", "enh.*"), ("k8s.pod-name", "!~", "x|y"))
    query = rulegen.Query(fn=fn, window_ns=90 * S, matchers=matchers, direction=direction)
    history = {
        "audio.stage.duration": (_times(n), load),
        "audio.queue.size": (_times(n), 3 * load + rng.normal(0, 0.1, n)),
    }
    rules = rulegen.suggest_rules(history, query)
    assert rules
    for rule in rules:
        cond = parse(rule.condition)
        terms = [cond.left, cond.right] if isinstance(cond, And) else [cond]
        for term in terms:
            func, metric, window, got, op, number = _term_parts(term)
            assert (func, window, op) == (fn, 90 * S, query.op)
            assert got == tuple(LabelMatcher(*m) for m in matchers)
            assert metric in history
            assert rulegen.format_number(number) == re.search(
                rf"{re.escape(metric)}\{{.*?\}}, 90s\) [<>] (\S+)", rule.condition
            ).group(1)
        if rule.threshold is not None and not isinstance(cond, And):
            assert cond.number == pytest.approx(rule.threshold, rel=1e-5)


def test_the_suggesters_trend_rule_parses_as_rate_of_change():
    values = np.random.default_rng(3).normal(0.0, 1.0, 3000) + np.linspace(0.0, 5.0, 3000)
    rule = rulegen.trend_rule("process.memory.usage", _times(3000), values, M)
    cond = parse(rule.condition)
    assert cond.operand.func == "rate_of_change" and cond.op == ">"
    assert cond.number == float(rule.condition.rsplit(" ", 1)[1]) > 0


# -- hostile and broken input ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "column", "message"),
    [
        (
            "avg(processing_time, 5m)",
            25,
            "expected a comparison (>, >=, <, <=, ==, !=) after avg(processing_time, 5m), found end of input",
        ),
        ('__import__("os")', 1, "unknown function __import__; known: avg, min, max"),
        ("exec(x) > 1", 1, "unknown function exec;"),
        ("x > 1 and open(f) > 1", 11, "unknown function open;"),
        ("x.__class__() > 1", 1, "unknown function x.__class__;"),
        ("x > 1; y > 2", 6, "unexpected character ';'"),
        ("x + 1 > 2", 3, "unexpected character '+'"),
        ('m{a="unterminated} > 1', 5, 'unterminated string: a quoted value needs a closing "'),
        ('m{a=~"(ab"} > 1', 6, "bad regex '(ab'"),
        ('m{a=~"(?=x)"} > 1', 6, "uses lookaround or backreferences"),
        (r'm{a="\d"} > 1', 6, r"unknown escape \d"),
        ("m{a=1} > 1", 5, "expected a quoted value like \"denoise\" after a=, found '1'"),
        ("m{a} > 1", 4, "expected one of = != =~ !~ after a, found '}'"),
        ("x > y", 5, "expected a number after x >, found 'y'"),
        ("x >", 4, "expected a number after x >, found end of input"),
        ("x > 1 and", 10, "expected a condition"),
        ("(x > 1", 7, "expected ')' closing the '(' at line 1, column 1 after x > 1, found end of input"),
        ("x > 1)", 6, "expected 'and', 'or' or end of input after x > 1, found ')'"),
        ("absent(x) > 0", 11, "after absent(x, 5m), found '>'"),
        ("avg(x 5m) > 1", 7, "expected ',' and a window, or ')' after avg(x, found '5m'"),
        ("avg(x, 5min) > 1", 8, "bad number or duration '5min'"),
        ("avg(x, 0s) > 1", 8, "window 0s must be a whole number of milliseconds from 1ms to 1w"),
        ("avg(x, 2w) > 1", 8, "from 1ms to 1w"),
        ("avg(x, foo) > 1", 8, "expected a window"),
        ("anomaly(x, 5m) > 1", 10, "expected ')' (anomaly takes a selector only)"),
        ("and > 1", 1, "expected a condition"),
        ("x > 1e999", 5, "number 1e999 is out of range"),
        ("avg(avg(x)) > 1", 5, "expected a metric name, found 'avg'"),
        ("p101(x) > 1", 1, "unknown function p101"),
    ],
)
def test_bad_input_is_refused_with_its_position_and_what_was_expected(text, column, message):
    error = error_of(text)
    assert (error.line, error.column) == (1, column)
    assert message in str(error)
    assert str(error).startswith(f"line 1, column {column}: ")


def test_positions_count_lines_and_columns_from_one():
    error = error_of("avg(a, 1m) > 1\n  and rate(b, 1m) >")
    assert (error.line, error.column) == (2, 20)


def test_an_error_is_a_value_error():
    assert issubclass(RuleSyntaxError, ValueError)


def test_a_condition_longer_than_the_limit_is_refused():
    error = error_of("x" * (MAX_LENGTH + 1) + " > 1")
    assert f"at most {MAX_LENGTH}" in str(error)
    parse("x" * (MAX_LENGTH - 4) + " > 1")


def test_a_condition_with_too_many_nodes_is_refused():
    ok = " or ".join(["x > 1"] * (MAX_NODES // 3))  # each term: selector and comparison, plus one or
    parse(ok)
    error = error_of(ok + " or x > 1" * 10)
    assert f"more than {MAX_NODES} nodes" in str(error)


def test_nesting_deeper_than_the_limit_is_refused():
    parse("(" * MAX_DEPTH + "x > 1" + ")" * MAX_DEPTH)
    error = error_of("(" * (MAX_DEPTH + 1) + "x > 1" + ")" * (MAX_DEPTH + 1))
    assert error.column == MAX_DEPTH + 1 and f"deeper than {MAX_DEPTH}" in str(error)
    assert "deeper" in str(error_of("not " * (MAX_DEPTH + 1) + "x > 1"))


def test_deep_input_within_the_length_limit_never_exhausts_the_stack():
    assert "deeper" in str(error_of("(" * 4000))


def test_a_non_string_is_a_type_error():
    with pytest.raises(TypeError):
        parse(42)


# -- canonical text round trip ---------------------------------------------------------------------

_names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.]{0,8}", fullmatch=True).filter(
    lambda s: s not in ("and", "or", "not")
)
_labels = st.from_regex(r"[A-Za-z_][A-Za-z0-9_.-]{0,6}", fullmatch=True)
_matchers = (
    st.tuples(_labels, st.sampled_from(["=", "!=", "=~", "!~"]), st.text(alphabet='ab"\\ .é\n', max_size=6))
    .filter(lambda m: m[1] in ("=", "!=") or _compiles(m[2]))
    .map(lambda m: LabelMatcher(*m))
)
_selectors = st.builds(Selector, _names, st.lists(_matchers, max_size=3).map(tuple))
_windows = st.integers(1, 7 * 86400 * 1000).map(lambda ms: ms * 10**6)
_funcs = st.sampled_from(
    [
        "avg",
        "min",
        "max",
        "sum",
        "count",
        "last",
        "rate",
        "increase",
        "rate_of_change",
        "p50",
        "p99.9",
        "p100",
    ]
)
_operands = st.one_of(
    _selectors, st.builds(Anomaly, _selectors), st.builds(Call, _funcs, _selectors, _windows)
)
_leaves = st.one_of(
    st.builds(
        Compare,
        _operands,
        st.sampled_from([">", ">=", "<", "<=", "==", "!="]),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    st.builds(Absent, _selectors, _windows),
)
_conditions = st.recursive(
    _leaves,
    lambda inner: st.one_of(st.builds(And, inner, inner), st.builds(Or, inner, inner), st.builds(Not, inner)),
    max_leaves=8,
)


def _compiles(pattern: str) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return False
    return True


@settings(max_examples=300, deadline=None)
@given(_conditions)
def test_canonical_text_parses_back_to_the_same_tree(cond):
    assert parse(str(cond)) == cond


# -- the reference states what the parser does -----------------------------------------------------


def _doc() -> str:
    from pathlib import Path

    return (Path(__file__).resolve().parents[1] / "docs" / "alerting-rules.md").read_text()


def test_every_error_in_the_reference_is_the_parsers_message():
    section = _doc().split("## Errors", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(.+?)` \| `(.+)` \|$", section, flags=re.MULTILINE)
    assert len(rows) >= 10
    for text, message in rows:
        assert str(error_of(text.replace("`<br>`", "\n"))) == message


_pieces = st.sampled_from(
    [
        *'(){},"\\=!~<>-.e5 0x_ab\n',
        "and ",
        "or ",
        "not ",
        "avg(",
        "p95(",
        "absent(",
        "anomaly(",
        "5m",
        "1e3",
        '"a"',
        "=~",
        "m{",
        "exec(",
        "__import__(",
    ]
)


@settings(max_examples=500, deadline=None)
@given(st.lists(_pieces, max_size=40).map("".join))
def test_any_text_parses_or_raises_a_syntax_error_and_what_parses_round_trips(text):
    try:
        cond = parse(text)
    except RuleSyntaxError:
        return
    assert parse(str(cond)) == cond
