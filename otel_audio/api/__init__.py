"""The receiver's HTTP API: metric queries, traces, logs, health and /metrics."""
