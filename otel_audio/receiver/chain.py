"""The processor chain: every accepted batch passes through the configured processors, in order.

A chain member is anything implementing :class:`otel_audio.processors.base.Processor`. It is
built from the YAML config by name through :data:`REGISTRY`; later stages (aggregation,
alerting, SLOs) register themselves there. Processors that produce new series (self
monitoring now, aggregates later) receive an ``emit`` callback through ``bind_emit``; what
they emit flows to the processors *after* them, so data still only moves forward.

``process`` runs on one writer at a time (a lock), so processors need no locking of their
own for writes; readers (the query API) must cope with concurrent writes themselves.
A processor that raises is logged and counted; the batch still reaches the others, because
it is already durable in the WAL and losing it from one view must not lose it from all.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from otel_audio.processors.base import Batch, Processor
from otel_audio.receiver.config import ConfigError, ProcessorConfig
from otel_audio.receiver.selfmon import SelfMetrics

_log = logging.getLogger(__name__)


@dataclass
class ChainContext:
    """What processor factories may use to build themselves."""

    data_dir: str
    metrics: SelfMetrics
    shared: dict[str, Any]  # objects the service shares between members, e.g. "store"


Factory = Callable[[dict[str, Any], ChainContext], Processor]
REGISTRY: dict[str, Factory] = {}


def register(name: str) -> Callable[[Factory], Factory]:
    """Make a processor constructible from the config under ``name``."""

    def add(factory: Factory) -> Factory:
        REGISTRY[name] = factory
        return factory

    return add


class ProcessorChain:
    """Runs batches through processors in order, timing each, isolating failures."""

    def __init__(self, processors: Sequence[Processor], metrics: SelfMetrics) -> None:
        self.processors = list(processors)
        self._metrics = metrics
        self._lock = threading.Lock()
        for index, processor in enumerate(self.processors):
            bind = getattr(processor, "bind_emit", None)
            if bind is not None:
                bind(self._emitter(index + 1))

    def _emitter(self, start: int) -> Callable[[Batch], None]:
        def emit(batch: Batch) -> None:
            self._run(batch, start)

        return emit

    def process(self, batch: Batch) -> None:
        """Pass one accepted batch to every processor."""
        with self._lock:
            self._run(batch, 0)

    def _run(self, batch: Batch, start: int) -> None:
        for processor in self.processors[start:]:
            began = time.perf_counter()
            try:
                processor.process(batch)
            except Exception:
                _log.exception("processor %s failed on a %s batch", processor.name, batch.signal.value)
                self._metrics.processor_errors.labels(processor.name).inc()
            self._metrics.processor_seconds.labels(processor.name).observe(time.perf_counter() - began)

    def tick(self, now_unix_nano: int) -> None:
        """Time-driven work of every processor (windows closing, timers, self-monitoring)."""
        with self._lock:
            for processor in self.processors:
                try:
                    processor.tick(now_unix_nano)
                except Exception:
                    _log.exception("processor %s failed on tick", processor.name)
                    self._metrics.processor_errors.labels(processor.name).inc()

    def close(self) -> None:
        with self._lock:
            for processor in self.processors:
                try:
                    processor.close()
                except Exception:
                    _log.exception("processor %s failed to close", processor.name)


def build_chain(configs: Sequence[ProcessorConfig], context: ChainContext) -> ProcessorChain:
    """Construct the configured processors; unknown names are a config error naming the entry."""
    processors = []
    for index, config in enumerate(configs):
        factory = REGISTRY.get(config.name)
        if factory is None:
            known = ", ".join(sorted(REGISTRY))
            raise ConfigError(f"processors[{index}]: unknown processor {config.name!r}; known: {known}")
        processors.append(factory(config.options, context))
    return ProcessorChain(processors, context.metrics)
