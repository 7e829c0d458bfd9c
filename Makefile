# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench soak clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's metadata or the native scanner changes; the install is editable.
# The fuzz extra (atheris) makes the fuzz driver's test use the coverage-guided engine.
$(STAMP): pyproject.toml otel_audio/receiver/_otlp_scan.c | $(PY)
	$(PY) -m pip install --quiet -e '.[receiver,quality,test,fuzz]'
	touch $(STAMP)

# make demo DEMO_ARGS="--duration 60 --fault-every 20": options of otel-audio demo --serve (docs/demo.md)
DEMO_ARGS ?=
demo: $(STAMP)
	$(PY) -m otel_audio.cli demo --serve $(DEMO_ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: $(STAMP)
	$(PY) benchmarks/decorator_overhead.py
	$(PY) benchmarks/signal_cost.py
	$(PY) benchmarks/decode.py
	$(PY) benchmarks/wal.py
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/query.py
	$(PY) benchmarks/storage.py --block-hours 24
	$(PY) benchmarks/trace_lookup.py
	$(PY) benchmarks/flush.py
	$(PY) benchmarks/aggregation.py
	$(PY) benchmarks/anomaly.py
	$(PY) benchmarks/forecast.py
	$(PY) benchmarks/forecast_tick.py
	$(PY) benchmarks/derived.py
	$(PY) benchmarks/alert_eval.py
	$(PY) benchmarks/alert_latency.py --background 200
	$(PY) benchmarks/dashboard.py

# A steady load for SOAK_MINUTES with the receiver's memory, descriptors and latency recorded
# (benchmarks/soak.py); kept out of `make test`.
SOAK_MINUTES ?= 30
soak: $(STAMP)
	$(PY) benchmarks/soak.py --minutes $(SOAK_MINUTES)

clean:
	rm -rf $(VENV) build *.egg-info
