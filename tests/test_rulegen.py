"""Rule suggestion: the statistic chosen fits the history, fitted thresholds follow the labels,
and ``otel-audio rules suggest`` reads a real receiver's history and prints rules in the format."""

from __future__ import annotations

import re
import socket
import time

import numpy as np
import pytest
import yaml
from scipy import signal, special

from otel_audio import cli
from otel_audio.processors import rulegen
from otel_audio.processors.rulegen import Query
from tests.receiver_helpers import gauge, grpc_export_metrics, metrics_request

MINUTE = 60 * 10**9
T0 = 1_780_000_000 * 10**9

# The condition grammar of docs/rulegen.md, as the alerting rule parser reads it.
_FN = r"(avg|min|max|sum|count|rate|increase|p50|p90|p95|p99|rate_of_change)"
_MATCHER = r'[A-Za-z_][A-Za-z0-9_.\-]*(=|!=|=~|!~)"[^"]*"'
_SELECTOR = rf"[A-Za-z_][A-Za-z0-9_.]*(\{{{_MATCHER}(,{_MATCHER})*\}})?"
_TERM = rf"{_FN}\({_SELECTOR}, \d+(ms|s|m|h|d|w)\) (>|<) -?\d+(\.\d+)?"
CONDITION = re.compile(rf"{_TERM}( (and|or) {_TERM})*")


def times(n: int, step_ns: int = MINUTE) -> np.ndarray:
    return T0 + step_ns * np.arange(n, dtype=np.int64)


def threshold_of(rule: rulegen.RuleSuggestion | dict) -> float:
    condition = rule.condition if isinstance(rule, rulegen.RuleSuggestion) else rule["condition"]
    return float(condition.rsplit(" ", 1)[1])


def assert_rule_format(rule: dict) -> None:
    assert list(rule) == ["name", "condition", "for", "severity", "labels", "annotations"]
    assert re.fullmatch(r"[A-Za-z0-9_]+", rule["name"])
    assert CONDITION.fullmatch(rule["condition"]), rule["condition"]
    assert rule["severity"] in ("warning", "critical") and rule["for"] == "5m"
    assert set(rule["annotations"]) == {"summary", "description"}


# -- thresholds from the shape of the distribution ---------------------------------------------


def test_near_normal_history_gets_3_and_4_sigma_thresholds():
    values = np.random.default_rng(0).normal(10.0, 2.0, 5000)
    warning, critical = rulegen.threshold_rules("audio.stage.duration", values)
    assert (warning.severity, critical.severity) == ("warning", "critical")
    assert threshold_of(warning) == pytest.approx(16.0, abs=0.2)
    assert threshold_of(critical) == pytest.approx(18.0, abs=0.25)
    assert warning.condition.startswith("avg(audio.stage.duration, 5m) > ")
    assert "3 x robust sigma" in warning.annotations["description"]
    for rule in (warning, critical):
        assert_rule_format(rule.to_dict())


def test_skewed_history_gets_quantile_thresholds():
    values = np.random.default_rng(1).lognormal(0.0, 0.8, 5000)
    warning, critical = rulegen.threshold_rules("audio.stage.duration", values)
    assert threshold_of(warning) == pytest.approx(np.quantile(values, 0.99), rel=1e-5)
    assert threshold_of(critical) == pytest.approx(np.quantile(values, 0.999), rel=1e-5)
    assert "not near normal" in warning.annotations["description"]
    assert "99th percentile" in warning.annotations["description"]
    assert not rulegen.describe(values).near_normal


def test_low_side_rules_use_the_lower_tail():
    values = np.random.default_rng(2).normal(3.5, 0.1, 5000)
    warning, _ = rulegen.threshold_rules("audio.quality.score", values, Query(direction="below"))
    assert warning.condition.startswith("avg(audio.quality.score, 5m) < ")
    assert threshold_of(warning) == pytest.approx(3.2, abs=0.02)
    assert warning.name == "audio_quality_score_low_warning"


def test_selector_quotes_label_values_and_keeps_the_operator():
    matchers = [("audio.stage", "=", "denoise"), ("note", "!~", 'a"b')]
    assert rulegen.selector("m.x", matchers) == 'm.x{audio.stage="denoise",note!~"a\\"b"}'


# -- trends ------------------------------------------------------------------------------------


def test_a_significant_trend_gives_a_trend_rule_at_half_the_slope():
    n = 3000
    values = np.random.default_rng(3).normal(0.0, 1.0, n) + np.linspace(0.0, 5.0, n)
    rule = rulegen.trend_rule("system.memory.usage", times(n), values, MINUTE)
    assert rule is not None
    slope = 5.0 / ((n - 1) * 60)
    assert re.fullmatch(r"rate_of_change\(system\.memory\.usage, \d+[mhd]\) > [0-9.]+", rule.condition)
    assert threshold_of(rule) == pytest.approx(slope / 2, rel=0.1)
    assert "Mann-Kendall" in rule.annotations["description"]
    assert_rule_format(rule.to_dict())


@pytest.mark.parametrize("seed", range(5))
def test_flat_noise_gives_no_trend_rule(seed):
    values = np.random.default_rng(seed).normal(0.0, 1.0, 3000)
    assert rulegen.trend_rule("system.memory.usage", times(3000), values, MINUTE) is None


@pytest.mark.parametrize("seed", [1, 2, 7])
def test_autocorrelated_flat_series_gives_no_trend_rule(seed):
    """AR(1) noise wanders enough for Mann-Kendall alone to call it a trend (p < 0.001 for these
    seeds); the fitted change must also reach one residual sigma."""
    values = signal.lfilter([1.0], [1.0, -0.95], np.random.default_rng(seed).normal(size=3000))
    assert rulegen.trend_test(times(3000), values).p_value < rulegen.TREND_ALPHA
    assert rulegen.trend_rule("system.memory.usage", times(3000), values, MINUTE) is None


def test_a_trend_in_the_harmless_direction_gives_no_rule():
    values = np.random.default_rng(4).normal(0.0, 1.0, 3000) - np.linspace(0.0, 5.0, 3000)
    assert rulegen.trend_rule("audio.stage.duration", times(3000), values, MINUTE) is None


# -- composites --------------------------------------------------------------------------------


def test_a_correlated_pair_gives_a_composite_rule():
    rng = np.random.default_rng(5)
    load = rng.normal(10.0, 2.0, 2000)
    latency = 0.05 * load + rng.normal(0.0, 0.02, 2000)
    (rule,) = rulegen.composite_rules({"queue.size": (times(2000), load), "latency": (times(2000), latency)})
    left, right = rule.condition.split(" and ")
    assert left.startswith("avg(queue.size, 5m) > ") and right.startswith("avg(latency, 5m) > ")
    assert float(left.rsplit(" ", 1)[1]) == pytest.approx(np.quantile(load, 0.95), rel=1e-5)
    assert "Spearman" in rule.annotations["description"]
    assert_rule_format(rule.to_dict())


def test_an_anticorrelated_pair_watches_the_low_side_of_the_second_metric():
    rng = np.random.default_rng(6)
    load = rng.normal(10.0, 2.0, 2000)
    quality = 4.0 - 0.1 * load + rng.normal(0.0, 0.05, 2000)
    (rule,) = rulegen.composite_rules({"queue.size": (times(2000), load), "quality": (times(2000), quality)})
    assert " and avg(quality, 5m) < " in rule.condition


def test_an_independent_pair_gives_no_composite_rule():
    rng = np.random.default_rng(7)
    series = {"a": (times(2000), rng.normal(size=2000)), "b": (times(2000), rng.normal(size=2000))}
    assert rulegen.composite_rules(series) == []


# -- thresholds fitted to labelled history -----------------------------------------------------
# Values uniform on [0, 10]; a point is an incident with probability logistic(value - centre).
# The weighted cost is lowest where fp_weight x P(normal) = fn_weight x P(incident), i.e. at
# centre + logit(fp_weight / (fp_weight + fn_weight)).

_RNG = np.random.default_rng(8)
VALUES = _RNG.uniform(0.0, 10.0, 3000)
DRAWS = _RNG.uniform(size=3000)


def incident_labels(centre: float) -> np.ndarray:
    return DRAWS < special.expit(VALUES - centre)


@pytest.mark.parametrize(("fp_weight", "fn_weight"), [(1, 1), (1, 5), (5, 1), (2, 3)])
def test_fitted_threshold_is_the_brute_force_minimum_of_its_cost(fp_weight, fn_weight):
    labels = incident_labels(6.0)
    fit = rulegen.optimise_threshold(VALUES, labels, fp_weight, fn_weight)
    grid = np.linspace(VALUES.min(), VALUES.max(), 20001)
    smooth = rulegen.threshold_cost(grid, VALUES, labels, fp_weight, fn_weight, fit.width)
    assert fit.cost <= smooth.min() + 1e-6
    assert abs(fit.threshold - grid[np.argmin(smooth)]) < fit.width
    exact = rulegen.threshold_cost(np.sort(VALUES), VALUES, labels, fp_weight, fn_weight)
    # The smoothed optimum ignores label noise narrower than the width, which the exact minimum
    # over-fits, so its exact cost is close to, not at, the exact minimum.
    assert rulegen.threshold_cost(fit.threshold, VALUES, labels, fp_weight, fn_weight) <= 1.05 * exact.min()
    assert fit.false_positives == np.count_nonzero((VALUES > fit.threshold) & ~labels)
    theory = 6.0 + special.logit(fp_weight / (fp_weight + fn_weight))
    assert fit.threshold == pytest.approx(theory, abs=0.5)


def test_threshold_drops_when_the_labelled_incidents_include_lower_values():
    high = rulegen.optimise_threshold(VALUES, incident_labels(6.0)).threshold
    lower = incident_labels(4.0)
    assert (lower >= incident_labels(6.0)).all()  # the same incidents and more, at lower values
    assert rulegen.optimise_threshold(VALUES, lower).threshold < high - 1.0


def test_threshold_drops_as_missed_incidents_cost_more():
    fitted = [rulegen.optimise_threshold(VALUES, incident_labels(6.0), 1, w).threshold for w in (1, 3, 10)]
    assert fitted[0] > fitted[1] > fitted[2]


def test_threshold_rises_as_false_alarms_cost_more():
    fitted = [rulegen.optimise_threshold(VALUES, incident_labels(6.0), w, 1).threshold for w in (1, 3, 10)]
    assert fitted[0] < fitted[1] < fitted[2]


def test_a_below_rule_is_fitted_on_the_low_side():
    labels = DRAWS < special.expit(4.0 - VALUES)
    fit = rulegen.optimise_threshold(VALUES, labels, direction="below")
    assert fit.threshold == pytest.approx(4.0, abs=0.5)
    assert fit.false_negatives == np.count_nonzero((VALUES >= fit.threshold) & labels)


def test_labels_need_both_classes():
    with pytest.raises(ValueError, match="both incident and non-incident"):
        rulegen.optimise_threshold(VALUES, np.zeros(3000, bool))


def test_labels_from_intervals_and_from_points():
    t = times(6)
    assert rulegen.labels_from_intervals(t, [t[1]], [t[2]]).tolist() == [0, 1, 1, 0, 0, 0]
    flags = rulegen.labels_from_points(t, np.array([t[2] + 1, t[4]]), np.array([True, False]))
    assert flags.tolist() == [0, 0, 0, 1, 0, 0]


@pytest.mark.parametrize(("incidents_from", "warning_kept"), [(3.5, True), (2.0, False)])
def test_labels_replace_the_critical_rule_and_a_warning_beyond_it_is_dropped(incidents_from, warning_kept):
    values = np.random.default_rng(10).normal(0.0, 1.0, 5000)  # statistical warning near 3
    rules = rulegen.suggest_rules({"m": (times(5000), values)}, labels={"m": values > incidents_from})
    (critical,) = [r for r in rules if r.severity == "critical"]
    assert "labelled" in critical.annotations["summary"]
    assert critical.threshold == pytest.approx(incidents_from, abs=0.2)
    assert any(r.severity == "warning" for r in rules) is warning_kept


# -- the command line --------------------------------------------------------------------------


def export_history(receiver, n: int = 600) -> None:
    """``n`` minutes up to now: latency ~ N(0.5, 0.05) for denoise (2.0 for load), queue ~ 40 x latency."""
    rng = np.random.default_rng(9)
    now = time.time_ns()
    latency = rng.normal(0.5, 0.05, n)
    queue = 40 * latency + rng.normal(0.0, 0.2, n)
    stamps = [now - (n - i) * MINUTE for i in range(n)]
    denoise, load = {"audio.stage": "denoise"}, {"audio.stage": "load"}
    metrics = [
        gauge("audio.stage.duration", [(t, float(v), denoise) for t, v in zip(stamps, latency, strict=True)]),
        gauge(
            "audio.stage.duration", [(t, 2.0 + float(v), load) for t, v in zip(stamps, latency, strict=True)]
        ),
        gauge("audio.queue.size", [(t, float(v), denoise) for t, v in zip(stamps, queue, strict=True)]),
    ]
    grpc_export_metrics(receiver.grpc_port, metrics_request("enhancer", metrics), token="s3cret")


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["rules", "suggest", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def receiver(start_receiver):
    receiver = start_receiver(server__auth__tokens=["s3cret"])
    export_history(receiver)
    return receiver


def test_cli_suggests_rules_from_a_real_receivers_history(receiver, capsys):
    api = f"http://127.0.0.1:{receiver.api_port}"
    code, out, err = run(
        capsys, "--metric", "audio.stage.duration", "--metric", "audio.queue.size", "--since", "12h",
        "--api", api, "--token", "s3cret", "--match", "audio.stage=denoise",
    )  # fmt: skip
    assert code == 0, err
    rules = {rule["name"]: rule for rule in yaml.safe_load(out)["rules"]}
    for rule in rules.values():
        assert_rule_format(rule)
    warning = rules["audio_stage_duration_high_warning"]
    assert warning["condition"].startswith('avg(audio.stage.duration{audio.stage="denoise"}, 1m) > ')
    assert threshold_of(warning) == pytest.approx(0.65, abs=0.03)  # the load series (2.5) is left out
    composite = rules["audio_stage_duration_and_audio_queue_size"]["condition"]
    assert " and avg(audio.queue.size{audio.stage=" in composite


def test_cli_without_the_token_is_refused_in_one_line(receiver, capsys):
    code, out, err = run(
        capsys, "--metric", "audio.stage.duration", "--api", f"http://127.0.0.1:{receiver.api_port}"
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "bearer token (HTTP 401)" in err


def test_cli_names_an_unknown_metric_in_one_line(receiver, capsys):
    api = f"http://127.0.0.1:{receiver.api_port}"
    code, _, err = run(capsys, "--metric", "audio.stage.durations", "--api", api, "--token", "s3cret")
    assert code == 2 and err.count("\n") == 1
    assert "unknown metric 'audio.stage.durations'" in err and "Traceback" not in err


def test_cli_on_a_csv_with_labels_prints_a_fitted_critical_rule(tmp_path, capsys):
    data, labels = tmp_path / "latency.csv", tmp_path / "incidents.csv"
    stamps = times(3000) // 10**9
    data.write_text("timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in zip(stamps, VALUES, strict=True)))
    incident = incident_labels(6.0)
    labels.write_text(
        "timestamp,label\n" + "".join(f"{t},{int(f)}\n" for t, f in zip(stamps, incident, strict=True))
    )
    code, out, err = run(
        capsys, "--metric", "latency", "--input", str(data), "--labels", str(labels),
        "--fp-weight", "1", "--fn-weight", "1", "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    rules = {rule["name"]: rule for rule in yaml.safe_load(out)["rules"]}
    critical = rules["latency_high_critical"]
    assert critical["condition"].startswith("avg(latency, 1m) > ")
    expected = rulegen.optimise_threshold(VALUES, incident, 1, 1).threshold
    assert threshold_of(critical) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--since", "7 days"], "--since: expected a duration like"),
        (["--input", "/nonexistent/x.csv"], "cannot read /nonexistent/x.csv"),
        (["--match", "stage~x"], '--match: expected key="value"'),
        (["--agg", "avg", "--fp-weight", "0"], "must be greater than 0"),
    ],
)
def test_cli_bad_arguments_are_one_line_and_exit_2(capsys, argv, message):
    code, out, err = run(capsys, "--metric", "m", *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and message in err


def test_cli_with_an_unreachable_api_is_one_line_and_exit_2(capsys):
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = run(capsys, "--metric", "m", "--api", f"http://127.0.0.1:{port}")
    assert code == 2 and err.count("\n") == 1 and "cannot reach the receiver API" in err


def test_cli_with_too_little_history_says_how_much_it_needs(tmp_path, capsys):
    data = tmp_path / "short.csv"
    data.write_text("timestamp,value\n" + "".join(f"{1_780_000_000 + 60 * i},{i}\n" for i in range(10)))
    code, _, err = run(capsys, "--metric", "m", "--input", str(data))
    assert code == 2 and "only 10 points" in err and "at least 30" in err


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("start,end\n", "no rows after the header"),
        ("when,what\n1,2\n", ":1: expected the header start,end or timestamp,label"),
        ("timestamp,label\n1780000000,maybe\n", ":2: label 'maybe': expected 1/0, true/false or yes/no"),
        ("start,end\n1780000600,1780000000\n", ":2: end is before start"),
    ],
)
def test_cli_bad_labels_file_is_named_with_its_line(tmp_path, capsys, labels, message):
    data, label_file = tmp_path / "d.csv", tmp_path / "labels.csv"
    data.write_text("".join(f"{1_780_000_000 + 60 * i},{i % 7}\n" for i in range(100)))
    label_file.write_text(labels)
    code, _, err = run(capsys, "--metric", "m", "--input", str(data), "--labels", str(label_file))
    assert code == 2 and err.count("\n") == 1 and message in err


def test_cli_fits_to_incident_intervals(tmp_path, capsys):
    data, label_file = tmp_path / "d.csv", tmp_path / "incidents.csv"
    values = np.r_[np.random.default_rng(11).normal(1.0, 0.1, 300), np.full(20, 3.0)]
    data.write_text("".join(f"{1_780_000_000 + 60 * i},{v}\n" for i, v in enumerate(values)))
    label_file.write_text(f"start,end\n{1_780_000_000 + 60 * 300},{1_780_000_000 + 60 * 319}\n")
    code, out, err = run(capsys, "--metric", "m", "--input", str(data), "--labels", str(label_file))
    assert code == 0, err
    (critical,) = [r for r in yaml.safe_load(out)["rules"] if r["severity"] == "critical"]
    assert 1.3 < threshold_of(critical) < 3.0
    assert "0 false positives, 0 false negatives" in critical["annotations"]["description"]
