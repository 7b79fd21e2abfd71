# The two set-up commands of the README. Both create .venv on first use and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
OUT ?= out/demo

.PHONY: demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip

## make demo: the main job (the paper's setting, analysed end to end)
demo: $(PY)
	$(PIP) -e '.[plot]'
	$(VENV)/bin/greenllm demo --out $(OUT)

## make test: lint and the whole test suite (what CI runs)
test: $(PY)
	$(PIP) -e '.[test,cf,plot,data,nvml,ray,torch]'
	$(VENV)/bin/ruff check greenllm tests benchmarks examples
	$(PY) -m pytest -q

lint: $(PY)
	$(VENV)/bin/ruff check greenllm tests benchmarks examples
	$(VENV)/bin/ruff format --check greenllm tests benchmarks examples

## make bench: the benchmarks of docs/ (side-by-side comparisons)
bench: $(PY)
	$(PIP) -e '.[test,cf]'
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache out
