# Everything a fresh machine needs: `make demo` and `make test` build the venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXT    := $(VENV)/.ext-built
OUT    ?= bench/out

.PHONY: venv demo test bench lint clean

venv: $(STAMP) $(EXT)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=64' wheel 'cython>=3.0'
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[test,dev]'
	touch $@

# rebuild the Cython core in place whenever its sources change
$(EXT): $(STAMP) csrc/_ring.pyx csrc/ring_layout.pxd csrc/ring_layout.h
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

demo: venv
	$(BIN)/python bench/ring_demo.py

test: venv
	$(BIN)/python -m pytest tests

bench: venv
	mkdir -p $(OUT)
	$(BIN)/python -m pytest bench/test_ring_bench.py --benchmark-only --benchmark-json=$(OUT)/ring.json -q
	$(BIN)/python bench/ring_report.py $(OUT)/ring.json

lint: venv
	$(BIN)/ruff check streamenc tests bench setup.py
	$(BIN)/ruff format --check streamenc tests bench setup.py

clean:
	rm -rf $(VENV) build *.egg-info csrc/_ring.c streamenc/_ring*.so $(OUT) .pytest_cache .benchmarks .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
