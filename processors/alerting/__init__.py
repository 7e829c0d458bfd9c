"""Alerting: rules parsed from a small grammar, Prometheus-grade states, Alertmanager-grade routing.

See :mod:`otel_audio.processors.alerting.model` for the stages and the values they exchange.
"""
