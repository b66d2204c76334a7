# Two commands do all the set-up on a fresh machine (Python 3.11, no GPU needed):
#   make bench   set up .venv, run the benchmark grid, write the report
#   make test    set up .venv, run the test suite
#   make browser-test  the report in a real browser (needs chromium-headless-shell and fonts-noto-cjk)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0
# Which torch: by default what pip's index serves for the pin (PyPI: the CUDA build on Linux x86-64,
# several GB of nvidia-* wheels). CPU build: TORCH_INDEX=https://download.pytorch.org/whl/cpu.
# A wheel file: TORCH_SPEC=/path/to/torch-....whl
TORCH_INDEX ?=
TORCH_SPEC ?= torch==$(TORCH_VERSION)
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1

.PHONY: bench test lint browser-test setup clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is installed first, as chosen above; the package's torch>=2.13,<2.14 then keeps it.
$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e .
	touch $@

setup: $(VENV)/.installed

bench: setup
	$(BIN)/pytest benchmarks $(ARGS)
	@echo "Timings (pytest-benchmark): .benchmarks/   Results and report: .benchmarks/ohlora/"

$(VENV)/.lint-installed: setup.cfg | $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[lint]"
	touch $@

# Style by ruff (pyproject.toml) and the layers by import-linter (the contracts in setup.cfg).
lint: $(VENV)/.lint-installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports setup.cfg

# Two pytest-xdist workers: the suite's end-to-end runs are separate processes that wait on each other.
# loadgroup keeps the tests that read one session grid on one worker (tests/conftest.py: SHARED_GRIDS).
# The quantization extra too, so that the 8bit and 4bit paths run in CI rather than skip.
$(VENV)/.quantization-installed: setup.cfg | $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[quantization]"
	touch $@

test: setup lint $(VENV)/.quantization-installed
	$(BIN)/pytest tests -rs -m "not slow" -n 2 --dist loadgroup $(ARGS)

# leaderboard.html in headless Chromium at 1280 px (apt-get install chromium-headless-shell fonts-noto-cjk).
browser-test: setup
	$(BIN)/pytest tests/e2e/test_browser.py -rs $(ARGS)

clean:
	rm -rf $(VENV) .benchmarks/ohlora .benchmarks/Linux-*
