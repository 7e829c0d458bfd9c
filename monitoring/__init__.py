"""``from monitoring import ProductionMonitor``: the seed's import path for otel-audio's monitor.

The names the seed's readers look for, re-exported from :mod:`otel_audio.monitor` and
:mod:`otel_audio.monitor_api` (``docs/production-monitor.md``). Importing this package loads
neither the receiver nor the processors; an embedded monitor or a building block loads what it
uses when it is first used.
"""

from otel_audio.monitor import (
    HealthStatus,
    ProductionMonitor,
    ServiceHealth,
    SLAReportSummary,
    TriggeredAlert,
)
from otel_audio.monitor_api import (
    IntelligentAlertGenerator,
    MetricAggregationEngine,
    PredictiveMonitor,
    SLOManager,
    TimeSeriesOptimizer,
    trace_audio_pipeline,
    trace_audio_stage,
)
from otel_audio.monitor_backend import ChannelConfigError, MonitorError

__all__ = [
    "ChannelConfigError",
    "HealthStatus",
    "IntelligentAlertGenerator",
    "MetricAggregationEngine",
    "MonitorError",
    "PredictiveMonitor",
    "ProductionMonitor",
    "SLAReportSummary",
    "SLOManager",
    "ServiceHealth",
    "TimeSeriesOptimizer",
    "TriggeredAlert",
    "trace_audio_pipeline",
    "trace_audio_stage",
]
