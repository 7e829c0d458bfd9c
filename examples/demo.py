"""The demo: enhance generated noisy speech through the instrumented pipeline and read the telemetry.

By default the telemetry stays in the process (an in-memory span exporter and metric reader)
and a summary is printed from it: spans per stage, stage latency percentiles, real-time
factors, SNR improvement, quality index and errors by type. ``--endpoint`` exports over OTLP
to a real collector or receiver instead, and the summary is then read from a local copy of
the spans.

Run from the repository root: ``otel-audio demo`` (``make demo`` runs ``otel-audio demo --serve``).
"""

from __future__ import annotations

import math
import resource
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any, TextIO

import numpy as np
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import StatusCode

import otel_audio
from examples import enhance_pipeline
from examples.enhance_pipeline import PIPELINE_NAME, STAGES, Faults, FileResult
from otel_audio import semconv

IN_MEMORY = (
    "no endpoint given: telemetry goes to an in-memory exporter and is summarised here "
    "(otel-audio demo --serve runs it through a receiver instead)"
)


def run_demo(
    files: int = 20,
    *,
    endpoint: str | None = None,
    faults: bool = False,
    output_dir: str | None = None,
    seed: int = 0,
    out: TextIO = sys.stdout,
    shutdown: bool = True,
) -> int:
    """Configure telemetry, run the pipeline on ``files`` generated files, print the summary.

    With ``shutdown=False`` the providers stay up (flushed), for a caller that keeps running.
    """
    spans = InMemorySpanExporter()
    reader: InMemoryMetricReader | None = None
    if endpoint is None:
        print(f"note: {IN_MEMORY}.", file=out)
        reader = InMemoryMetricReader()
        telemetry = otel_audio.configure(
            "otel-audio-demo",
            span_exporter=spans,
            metric_readers=[reader],
            sampler=ALWAYS_ON,  # keep every trace, so the summary sees every file
            logs=False,
            signal_metrics=True,
            signal_sample_ratio=1.0,
        )
    else:
        print(f"note: exporting traces and metrics over OTLP to {endpoint}.", file=out)
        telemetry = otel_audio.configure(
            "otel-audio-demo", endpoint=endpoint, logs=False, signal_metrics=True, signal_sample_ratio=1.0
        )
        if telemetry.tracer_provider is not None:  # a local copy of the sampled spans for the summary
            telemetry.tracer_provider.add_span_processor(SimpleSpanProcessor(spans))

    chosen = Faults.demo() if faults else None
    print(
        f"enhancing {files} generated speech files (3 s, 16 kHz, white/pink noise at 0-10 dB SNR)"
        + (", faults injected" if faults else ""),
        file=out,
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="otel-audio-demo-") as scratch:
        results = enhance_pipeline.run(files, faults=chosen, seed=seed, output_dir=output_dir or scratch)
    elapsed = time.perf_counter() - started
    flushed = telemetry.force_flush(timeout_millis=5_000)

    metrics = reader.get_metrics_data() if reader is not None else None
    print(summary(spans.get_finished_spans(), metrics, results, elapsed), file=out)
    if faults:
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(
            f"memory leak fault: {enhance_pipeline.leaked_bytes() / 2**20:.0f} MiB never released "
            f"(peak RSS {rss_mb:.0f} MiB)",
            file=out,
        )
    if output_dir:
        print(f"enhanced audio written to {output_dir}", file=out)
    if endpoint is not None and flushed:
        print(f"telemetry exported to {endpoint}", file=out)
    elif endpoint is not None:
        print(f"warning: export to {endpoint} did not complete; is a collector listening there?", file=out)
    out.flush()  # the exporters may retry for a while during shutdown; show the summary first
    if shutdown:
        telemetry.shutdown()
    return 0


def receiver_summary(api: str) -> str:
    """What the receiver holds after the run, read back through its HTTP API."""
    import requests

    def get(path: str, **params: Any) -> Any:
        return requests.get(f"{api}{path}", params=params, timeout=30).json()

    # the pipeline's own metrics; the receiver's derived series (audio.derived.*) come per window
    names = [m["name"] for m in get("/api/v1/metrics")["metrics"]]
    metrics = [n for n in names if n.startswith("audio.") and not n.startswith("audio.derived.")]
    traces = get("/api/v1/traces", service="otel-audio-demo", limit=1000)["traces"]
    p95 = get(
        "/api/v1/query_range",
        metric=semconv.STAGE_DURATION.name,
        agg="p95",
        group_by=semconv.AUDIO_STAGE,
        step="1h",
        start="now-1h",
        end="now+1m",
    )
    lines = [
        f"the receiver at {api} holds {len(traces)} traces of otel-audio-demo "
        f"and {len(metrics)} audio.* metrics",
        "stage p95 latency from the receiver's merged exponential histograms "
        f"(GET {api}/api/v1/query_range?metric={semconv.STAGE_DURATION.name}&agg=p95&group_by=audio.stage):",
    ]
    for series in sorted(p95.get("series", []), key=lambda s: s["labels"].get(semconv.AUDIO_STAGE, "")):
        value = series["points"][-1][1] if series["points"] else float("nan")
        lines.append(f"  {series['labels'].get(semconv.AUDIO_STAGE, '?'):<18} {value * 1000:8.2f} ms")
    return "\n".join(lines)


def summary(
    spans: Sequence[ReadableSpan],
    metrics: MetricsData | None,
    results: Sequence[FileResult],
    elapsed_s: float,
) -> str:
    """The readable report: per-stage figures from the spans, quality and errors from metrics."""
    lines: list[str] = []
    roots = [s for s in spans if s.name == PIPELINE_NAME]
    failed = sum(1 for s in roots if s.status.status_code is StatusCode.ERROR)
    lines += [
        "",
        f"files processed: {len(results)} in {elapsed_s:.1f} s "
        f"({len(results) - sum(r.error_type is not None for r in results)} ok, "
        f"{sum(r.error_type is not None for r in results)} failed); "
        f"pipeline spans: {len(roots)} ({failed} with status ERROR)",
        "",
        f"{'stage':<18}{'spans':>6}{'errors':>8}{'p50 ms':>9}{'p95 ms':>9}{'mean RTF':>11}",
    ]
    by_stage: dict[str, list[ReadableSpan]] = defaultdict(list)
    for span in spans:
        if span.attributes and span.attributes.get(semconv.AUDIO_STAGE) in STAGES:
            by_stage[span.name].append(span)
    for stage in STAGES:
        group = by_stage.get(stage, [])
        durations_ms = [(s.end_time - s.start_time) / 1e6 for s in group if s.end_time and s.start_time]
        errors = sum(1 for s in group if s.status.status_code is StatusCode.ERROR)
        rtfs = [
            float(s.attributes[semconv.AUDIO_REALTIME_FACTOR])
            for s in group
            if s.attributes and semconv.AUDIO_REALTIME_FACTOR in s.attributes
        ]
        p50, p95 = np.percentile(durations_ms, (50, 95)) if durations_ms else (math.nan, math.nan)
        rtf = float(np.mean(rtfs)) if rtfs else math.nan
        lines.append(f"{stage:<18}{len(group):>6}{errors:>8}{p50:>9.2f}{p95:>9.2f}{rtf:>11.5f}")

    injected = Counter(fault for r in results for fault in r.faults)
    if injected:
        lines += ["", "faults injected: " + ", ".join(f"{k} x{v}" for k, v in sorted(injected.items()))]
    lines += ["", *_quality_lines(spans, results)]
    lines += ["", *_error_lines(spans, metrics)]
    if metrics is not None:
        lines += ["", _metric_names(metrics)]
    return "\n".join(lines)


def _quality_lines(spans: Sequence[ReadableSpan], results: Sequence[FileResult]) -> list[str]:
    """SNR in/out per file joined by audio.id from the spans; PESQ/STOI per noise from the results."""
    snr: dict[str, dict[str, float]] = defaultdict(dict)
    index = []
    for span in spans:
        attrs = span.attributes or {}
        audio_id = attrs.get(semconv.AUDIO_ID)
        if audio_id is None or semconv.QUALITY_SNR not in attrs:
            continue
        snr[str(audio_id)][span.name] = float(attrs[semconv.QUALITY_SNR])
        if semconv.QUALITY_INDEX in attrs:
            index.append(float(attrs[semconv.QUALITY_INDEX]))
    pairs = [(v["quality_analysis"], v["validation"]) for v in snr.values() if len(v) == 2]
    lines = ["quality (SNR from span attributes, joined by audio.id):"]
    if pairs:
        before, after = np.mean(pairs, axis=0)
        lines.append(
            f"  SNR {before:.1f} dB -> {after:.1f} dB, improvement {after - before:+.1f} dB "
            f"(mean of {len(pairs)} files)"
        )
    if index:
        lines.append(
            f"  quality index (audio.quality.index): mean {np.mean(index):.3f}, min {min(index):.3f}"
        )
    for noise in sorted({r.noise for r in results if r.noise}):
        chosen = [r for r in results if r.noise == noise]
        figures = enhance_pipeline.summarise(chosen)
        if figures["snr_improvement_db"] is None:
            continue
        text = f"  {noise:<5} noise: SNR {figures['snr_improvement_db']:+.1f} dB"
        for name in ("pesq", "stoi"):
            if figures[f"{name}_after"] is not None:
                text += f", {name.upper()} {figures[f'{name}_before']:.2f} -> {figures[f'{name}_after']:.2f}"
        lines.append(text)
    if not (enhance_pipeline.HAVE_PESQ and enhance_pipeline.HAVE_STOI):
        lines.append("  (PESQ/STOI need the [quality] extra: pip install 'otel-audio[quality]')")
    return lines


def _error_lines(spans: Sequence[ReadableSpan], metrics: MetricsData | None) -> list[str]:
    """Errors by type: the ``audio.errors`` counter when metrics are local, else the stage spans."""
    counts: Counter[tuple[str, str]] = Counter()
    source = "audio.errors metric"
    if metrics is not None:
        for point in _points(metrics, semconv.ERRORS.name):
            attrs = point.attributes or {}
            counts[(str(attrs.get(semconv.ERROR_TYPE)), str(attrs.get(semconv.AUDIO_STAGE)))] += point.value
    else:
        source = "stage spans with status ERROR"
        for span in spans:
            attrs = span.attributes or {}
            if span.status.status_code is StatusCode.ERROR and attrs.get(semconv.AUDIO_STAGE) in STAGES:
                counts[(str(attrs.get(semconv.ERROR_TYPE)), str(attrs.get(semconv.AUDIO_STAGE)))] += 1
    if not counts:
        return [f"errors ({source}): none"]
    lines = [f"errors by type ({source}):"]
    for (kind, stage), count in sorted(counts.items()):
        lines.append(f"  {count:>3} x {kind} in {stage}")
    return lines


def _metric_names(metrics: MetricsData) -> str:
    names = sorted({m.name for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics})
    return "metrics recorded: " + ", ".join(names)


def _points(metrics: MetricsData, name: str) -> list[Any]:
    return [
        point
        for rm in metrics.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


if __name__ == "__main__":
    from otel_audio.cli import main

    sys.exit(main(["demo", *sys.argv[1:]]))
