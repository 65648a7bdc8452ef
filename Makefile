# Two commands set a fresh clone up: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv test-deps check-runtime browser demo test lint bench clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.runtime: $(BIN)/activate requirements.lock pyproject.toml
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.test: $(VENV)/.runtime requirements-test.lock requirements-nodeps.lock
	$(BIN)/pip install -q -r requirements-test.lock
	$(BIN)/pip install -q --no-deps -r requirements-nodeps.lock
	touch $@

venv: $(VENV)/.runtime

test-deps: $(VENV)/.test

# Every runtime import is pinned in requirements.lock and every shipped workflow validates, checked in the runtime
# venv before the test lock adds anything to it (tests/test_runtime_lock.py, plain Python, no pytest needed).
check-runtime: venv
	$(BIN)/python tests/test_runtime_lock.py

# Debian's chromium for the web-page tests: installed through apt when root, else one line naming the package.
browser:
	bash tests/ensure_chromium.sh

demo: check-runtime
	$(BIN)/refinery run workflows/pretrain.yaml --output out/pretrain --set stages.1.drop=false

lint: test-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint browser
	$(BIN)/pytest -m "not slow"

bench: test-deps
	$(BIN)/python bench/bench_tokenize.py
	$(BIN)/python bench/bench_dedup.py
	$(BIN)/python bench/bench_quality.py --corpus prose
	$(BIN)/python bench/bench_quality.py --corpus code
	$(BIN)/python bench/bench_pretrain.py
	$(BIN)/python bench/bench_service.py
	$(BIN)/python bench/bench_scale.py --text-mb 1024

clean:
	rm -rf out bench/results
