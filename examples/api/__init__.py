"""One short, runnable script per public API of otel-audio; run each from the repository root."""
