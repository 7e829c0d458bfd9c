# The two commands a new user runs: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the project's metadata changes; the install is editable.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[receiver,quality,test]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m otel_audio.cli demo --serve

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

clean:
	rm -rf $(VENV) build *.egg-info
