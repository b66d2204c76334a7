# Two commands do all the set-up on a fresh machine (Python 3.11, no GPU needed):
#   make bench   set up .venv, run the benchmark grid, write the report
#   make test    set up .venv, run the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: bench test setup clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned and installed first: a loose requirement pulls several GB of CUDA wheels.
$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

setup: $(VENV)/.installed

bench: setup
	$(BIN)/pytest benchmarks $(ARGS)
	@echo "Timings (pytest-benchmark): .benchmarks/   Results and report: .benchmarks/ohlora/"

test: setup
	$(BIN)/pytest tests -rs -m "not slow" $(ARGS)

clean:
	rm -rf $(VENV) .benchmarks/ohlora .benchmarks/Linux-*
