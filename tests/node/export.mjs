// Exports spans and metrics to an otel-audio receiver with the OpenTelemetry JavaScript SDK over
// OTLP gRPC, as a Node.js service would; tests/test_other_languages.py reads them back through the
// receiver's query API and its Jaeger API.
//
//   node export.mjs <grpc endpoint, e.g. http://127.0.0.1:4317> <run id>
//
// The endpoint and run id may instead come from OTEL_EXPORTER_OTLP_ENDPOINT and OTEL_AUDIO_RUN_ID.
// Every span time is fixed relative to a whole second (printed as time_s), so the test can check
// nanosecond and microsecond times exactly. Prints one JSON line: {"trace_id", "span_ids", "time_s"}.
// Exits 1 when an export failed (a failed span export rejects forceFlush; a failed metric export
// is only reported to the diagnostic logger, so errors logged there count too) and 2 on bad
// arguments.

import { context, diag, DiagLogLevel, SpanKind, SpanStatusCode, trace } from '@opentelemetry/api';
import { OTLPMetricExporter } from '@opentelemetry/exporter-metrics-otlp-grpc';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-grpc';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import { MeterProvider, PeriodicExportingMetricReader } from '@opentelemetry/sdk-metrics';
import { BatchSpanProcessor, NodeTracerProvider } from '@opentelemetry/sdk-trace-node';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';

const endpoint = process.argv[2] ?? process.env.OTEL_EXPORTER_OTLP_ENDPOINT;
const runId = process.argv[3] ?? process.env.OTEL_AUDIO_RUN_ID;
if (!endpoint || !runId) {
  console.error('usage: node export.mjs <grpc endpoint, e.g. http://127.0.0.1:4317> <run id>');
  process.exit(2);
}

const failures = [];
diag.setLogger(
  {
    error: (...args) => {
      failures.push(args.join(' '));
      console.error('otel error:', ...args);
    },
    warn: (...args) => console.error('otel warn:', ...args),
    info: () => {},
    debug: () => {},
    verbose: () => {},
  },
  DiagLogLevel.WARN,
);

// service.instance.id is a semantic-convention resource attribute ("ATTR_" constants hold only the
// stable ones); the default resource adds telemetry.sdk.language=nodejs and the SDK's version.
const resource = defaultResource().merge(
  resourceFromAttributes({
    [ATTR_SERVICE_NAME]: 'node-denoiser',
    [ATTR_SERVICE_VERSION]: '1.4.0',
    'service.instance.id': runId,
  }),
);

const tracerProvider = new NodeTracerProvider({
  resource,
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter({ url: endpoint }))],
});
const meterProvider = new MeterProvider({
  resource,
  readers: [
    new PeriodicExportingMetricReader({
      exporter: new OTLPMetricExporter({ url: endpoint }),
      exportIntervalMillis: 3_600_000, // exported by forceFlush below, not by the timer
    }),
  ],
});

// HrTime [seconds, nanoseconds]; the odd 500 ns show that microseconds are truncated, not rounded.
const timeS = Math.floor(Date.now() / 1000) - 1;
const at = (ns) => [timeS + Math.floor(ns / 1e9), ns % 1e9];

const tracer = tracerProvider.getTracer('otel-audio-node-test', '0.1.0');
const request = tracer.startSpan(
  'request',
  {
    kind: SpanKind.SERVER,
    startTime: at(100_000_500),
    attributes: {
      'http.route': '/enhance',
      'audio.sample_rate': 16000,
      'audio.duration': 2.5,
      'audio.stereo': false,
      'audio.stages': ['enhancement', 'encode'],
    },
  },
  context.active(),
);
const inRequest = trace.setSpan(context.active(), request);

const enhancement = tracer.startSpan(
  'enhancement',
  { startTime: at(200_000_000), attributes: { 'audio.stage': 'enhancement', 'audio.frames': 40000 } },
  inRequest,
);
enhancement.addEvent('chunk', { index: 3, 'audio.signal.peak': 0.75 }, at(250_000_000));
enhancement.end(at(600_000_000));

const encode = tracer.startSpan(
  'encode',
  { startTime: at(650_000_000), attributes: { 'audio.stage': 'encode' } },
  inRequest,
);
encode.setStatus({ code: SpanStatusCode.ERROR, message: 'clipping in output' });
encode.end(at(700_000_250));
request.end(at(800_000_999));

const meter = meterProvider.getMeter('otel-audio-node-test', '0.1.0');
const files = meter.createCounter('audio.files.processed', {
  unit: '{file}',
  description: 'Files processed',
});
files.add(3, { 'audio.stage': 'enhancement' });
files.add(4, { 'audio.stage': 'enhancement' });
files.add(2, { 'audio.stage': 'encode' });
const latency = meter.createHistogram('audio.stage.latency', { unit: 'ms' });
for (const value of [10, 20, 30, 40]) {
  latency.record(value, { 'audio.stage': 'enhancement' });
}
meter.createGauge('audio.signal.peak', { unit: '1' }).record(0.75, { 'audio.stage': 'enhancement' });
meter
  .createObservableGauge('audio.realtime_factor', { unit: '1' })
  .addCallback((result) => result.observe(0.25, { 'audio.stage': 'enhancement' }));

// Every step runs even when one fails, so both providers shut down and the process can exit.
const steps = {
  'trace flush': () => tracerProvider.forceFlush(),
  'metric flush': () => meterProvider.forceFlush(),
  'trace shutdown': () => tracerProvider.shutdown(),
  'metric shutdown': () => meterProvider.shutdown(),
};
for (const [step, run] of Object.entries(steps)) {
  try {
    await run();
  } catch (error) {
    failures.push(`${step}: ${error}`);
    console.error(`${step} failed: ${error}`);
  }
}

if (failures.length > 0) {
  console.error(`${failures.length} export failure(s)`);
  process.exit(1);
}
const spanIds = Object.fromEntries(
  [request, enhancement, encode].map((span) => [span.name, span.spanContext().spanId]),
);
console.log(JSON.stringify({ trace_id: request.spanContext().traceId, span_ids: spanIds, time_s: timeS }));
