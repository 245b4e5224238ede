# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
# Both create or refresh the local virtualenv in .venv when pyproject.toml changes.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of PyTorch lies on this machine's disk; a bare `torch` requirement would pull a
# multi-GB CUDA build. pyproject.toml keeps an honest range; the pin lives here.
TORCH_SPEC ?= torch==2.13.0
PIP := $(BIN)/python -m pip --disable-pip-version-check -q
DEMO_OUT ?= demo-out
PYTEST_WORKERS ?= 2

.PHONY: venv test lint browser demo bench clean

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip setuptools wheel 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install "$(TORCH_SPEC)" 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -e ".[test]" 2>&1 | grep -v "^WARNING: Location" || true
	$(BIN)/python -c "import hil_tune.cli, bm3d, rawpy, torch, pidng, xdist, harvesters.core, serial, usb, cobs, matplotlib, cma, pytorch_msssim, distributed"
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint browser
	$(BIN)/pytest -n $(PYTEST_WORKERS)

# The report page is tested in a real headless browser: Debian's chromium, installed here when the
# machine allows it (root and apt); otherwise that one test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && \
	    apt-get install -y -q chromium >/dev/null 2>&1; }; }; } || \
	  echo "chromium is not installed and cannot be installed here: the report's browser test will skip"

demo: $(STAMP)
	$(BIN)/hil-tune demo all --out $(DEMO_OUT)

bench: $(STAMP)
	$(BIN)/python benchmarks/isp.py
	$(BIN)/python benchmarks/drivers.py
	$(BIN)/python benchmarks/capture.py
	$(BIN)/python benchmarks/proxy.py
	$(BIN)/python benchmarks/proxy_budget.py
	$(BIN)/python benchmarks/foreign_budget.py
	$(BIN)/python benchmarks/proxy_speed.py
	$(BIN)/python benchmarks/predictor.py
	$(BIN)/python benchmarks/live.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) build dist *.egg-info .pytest_cache .ruff_cache
