"""The span decorators and ``configure()``: instrument a small audio function and see what it records.

``@audio_stage`` turns a function into a pipeline stage (a span with the audio's rate, channels
and duration, plus ``audio.stage.duration`` and the real-time factor); ``audio_pipeline`` is the
root span of one file and counts it in ``audio.pipeline.files``, with ``error.type`` when it fails.

Run from the repository root::

    python examples/api/decorators.py                                  # telemetry kept in memory
    python examples/api/decorators.py --endpoint http://127.0.0.1:4317 # exported to a receiver

It processes ``--files`` one-second buffers, the last of which is too loud and fails, and prints
one line per span kind and per metric it recorded, e.g. ``span normalize: 4 ok, 1 error``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

import numpy as np
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_ON
from opentelemetry.trace import StatusCode

import otel_audio
from otel_audio import audio_pipeline, audio_stage, record_quality

SAMPLE_RATE = 16_000


@audio_stage("normalize")
def normalize(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """A stage: the decorator reads the rate from ``sample_rate`` and the length from the array."""
    peak = float(np.max(np.abs(audio)))
    if peak > 1.0:
        raise ValueError(f"input clipped: peak {peak:.2f} above full scale")
    return audio / peak if peak else audio


@audio_stage("enhancement")
def enhance(audio: np.ndarray, sample_rate: int) -> np.ndarray:
    """Another stage: a crude noise gate standing in for a denoiser."""
    return np.where(np.abs(audio) < 0.05, 0.0, audio).astype(np.float32)


def process(audio_id: str, audio: np.ndarray) -> None:
    """One file's journey: the stages inside ``audio_pipeline`` become children of its span."""
    with audio_pipeline(audio_id=audio_id, name="example_enhancement"):
        clean = enhance(normalize(audio, sample_rate=SAMPLE_RATE), sample_rate=SAMPLE_RATE)
        record_quality(pesq=3.6, stoi=0.91, snr=float(20 * np.log10(1 + np.sum(clean**2))))


def _buffers(files: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    buffers = [(0.3 * rng.standard_normal(SAMPLE_RATE)).clip(-1, 1).astype(np.float32) for _ in range(files)]
    buffers[-1] = buffers[-1] * 10  # the last file is clipped: normalize raises, the file fails
    return buffers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="OTLP endpoint, e.g. http://127.0.0.1:4317 (default: in memory)")
    parser.add_argument("--files", type=int, default=5, help="buffers to process, the last one fails")
    parser.add_argument("--service", default="example-denoiser", help="service.name of the telemetry")
    args = parser.parse_args(argv)

    # In memory, the SDK's own exporter and reader hold what was recorded; with an endpoint,
    # configure() builds the OTLP exporters. ALWAYS_ON keeps every trace of this short run
    # (production keeps the default adaptive sampler, which bounds traces per second).
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader() if args.endpoint is None else None
    telemetry = otel_audio.configure(
        service_name=args.service,
        endpoint=args.endpoint,
        sampler=ALWAYS_ON,
        span_exporter=spans if args.endpoint is None else None,
        metric_readers=[reader] if reader is not None else None,
        logs=False,
    )
    failed = 0
    for i, audio in enumerate(_buffers(args.files)):
        try:
            process(f"file-{i:03d}", audio)
        except ValueError as exc:  # the decorators record the error and re-raise it unchanged
            failed += 1
            print(f"file-{i:03d} failed: {exc}")
    print(f"processed {args.files} files, {failed} failed")

    if args.endpoint is not None:
        telemetry.shutdown()  # flush: every span and metric point is exported before we exit
        print(f"exported to {args.endpoint} as service {args.service!r}")
        return 0

    telemetry.force_flush()  # spans leave the batch processor for the in-memory exporter
    outcomes: dict[str, Counter[str]] = {}
    for span in spans.get_finished_spans():
        ok = "error" if span.status.status_code is StatusCode.ERROR else "ok"
        outcomes.setdefault(span.name, Counter())[ok] += 1
    for name in sorted(outcomes):
        print(f"span {name}: {outcomes[name]['ok']} ok, {outcomes[name]['error']} error")
    data = reader.get_metrics_data() if reader is not None else None
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sorted(sm.metrics, key=lambda m: m.name):
                points = metric.data.data_points
                if hasattr(points[0], "count"):  # a histogram: how many values it observed
                    what, total = "observations", sum(p.count for p in points)
                else:  # a counter: its sum
                    what, total = "sum", sum(p.value for p in points)
                print(f"metric {metric.name} [{metric.unit}]: {len(points)} series, {what} {total:g}")
    telemetry.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
