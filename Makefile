# Two commands set a fresh clone up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv test-deps demo test lint bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: $(BIN)/activate requirements.lock pyproject.toml
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime requirements-test.lock
	$(BIN)/pip install -q -r requirements-test.lock
	touch $@

venv: $(VENV)/.runtime

test-deps: $(VENV)/.test

demo: venv
	$(BIN)/refinery run workflows/pretrain.yaml --output out/pretrain --set stages.1.drop=false

lint: test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/pytest -m "not slow"

bench: test-deps
	$(BIN)/python bench/bench_tokenize.py
	$(BIN)/python bench/bench_dedup.py
	$(BIN)/python bench/bench_quality.py --corpus prose
	$(BIN)/python bench/bench_quality.py --corpus code
	$(BIN)/python bench/bench_service.py

clean:
	rm -rf out bench/results
