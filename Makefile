# Everything a fresh machine needs: `make demo` and `make test` build the venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
EXT    := $(VENV)/.ext-built
LEROBOT := $(VENV)/.lerobot-installed
# lerobot 0.6.x needs Python >= 3.12: a second venv
PY312  ?= $(shell PYENV_VERSION=3.12.1 pyenv which python3.12 2>/dev/null || command -v python3.12)
VENV06 ?= .venv-lerobot06
LEROBOT06 := $(VENV06)/.installed
OUT    ?= bench/out
INSTALLED ?= build/venv-installed

.PHONY: bench-lerobot06 bench-depth bench-chunks venv lerobot lerobot06 check-ffmpeg demo test test-fast test-dev test-lerobot06 dist test-installed bench bench-lerobot bench-loop bench-overload lint clean

venv: $(STAMP) $(EXT)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip 'setuptools>=77' wheel 'cython>=3.0'
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[test,dev,bench]'
	touch $@

# The real lerobot 0.4.4 for the integration tests. Its own pins conflict with what
# installs here, so: torch first, lerobot without deps, then a known-good set.
# av<16 is lerobot's pin; streamenc supports av>=14, so both live in one venv.
$(LEROBOT): $(STAMP) tests/requirements-lerobot.txt
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/python -m pip install -q --no-deps lerobot==0.4.4
	$(BIN)/python -m pip install -q -r tests/requirements-lerobot.txt
	touch $@

# The real lerobot 0.6.1 on Python 3.12, with streamenc installed editable in it.
$(LEROBOT06): pyproject.toml setup.py tests/requirements-lerobot06.txt
	@test -n "$(PY312)" || { echo "make: lerobot 0.6.x needs Python 3.12, which is not installed here:" \
		"install it (e.g. pyenv install 3.12.1) or run make PY312=/path/to/python3.12" >&2; exit 1; }
	test -x $(VENV06)/bin/python || $(PY312) -m venv $(VENV06)
	$(VENV06)/bin/python -m pip install -q --upgrade pip 'setuptools>=77' wheel 'cython>=3.0'
	$(VENV06)/bin/python -m pip install -q -r tests/requirements-lerobot06.txt
	$(VENV06)/bin/python -m pip install -q --no-build-isolation -e '.[test,bench]'
	touch $@

# torchcodec, LeRobot's default video decoder, needs FFmpeg's shared libraries (.ci/run
# installs them from the distribution's packages: apt-get install ffmpeg).
check-ffmpeg:
	@ldconfig -p | grep -q 'libavcodec\.so\.' || { echo "make: FFmpeg's shared libraries are missing;" \
		"torchcodec (LeRobot's video decoder) needs them: apt-get install ffmpeg (or your distribution's" \
		"ffmpeg / libavcodec package)" >&2; exit 1; }

# rebuild the Cython core in place whenever its sources change
$(EXT): $(STAMP) csrc/_ring.pyx csrc/ring_layout.pxd csrc/ring_layout.h
	$(BIN)/python setup.py -q build_ext --inplace
	touch $@

lerobot: $(LEROBOT)

lerobot06: $(LEROBOT06)

demo: venv
	$(BIN)/python -m streamenc.demo

# Everything: the whole suite in the dev venv (lerobot 0.4.4), the unit and LeRobot tests
# on Python 3.12 against lerobot 0.6.1, then the unit tests against the built wheel
# installed in a clean venv.
test: test-dev test-lerobot06 test-installed

test-dev: venv $(LEROBOT) check-ffmpeg
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest tests

test-lerobot06: $(LEROBOT06) check-ffmpeg
	HF_HUB_OFFLINE=1 $(VENV06)/bin/python -m pytest tests -m "lerobot or not slow" -q -p no:cacheprovider

# The unit tests only (no lerobot, no multi-second fault or benchmark runs): under a minute.
test-fast: venv
	$(BIN)/python -m pytest tests -m "not slow and not lerobot" -q

# The sdist and a wheel, built from this tree with the venv's setuptools and Cython.
dist: venv
	rm -rf dist
	$(BIN)/python -m build --no-isolation --sdist --wheel --outdir dist . > /dev/null

# The wheel in a clean venv (no Cython, the source tree not on sys.path), and the unit
# tests run against it from outside the tree: what a user's install gets.
test-installed: dist
	rm -rf $(INSTALLED)
	$(PYTHON) -m venv $(INSTALLED)
	$(INSTALLED)/bin/python -m pip install -q --upgrade pip
	$(INSTALLED)/bin/python -m pip install -q "$$(ls dist/*.whl)[test,bench]"
	cd $(INSTALLED) && bin/python -c "import importlib.util as u, streamenc, sys; \
		assert '/site-packages/' in streamenc.__file__, streamenc.__file__; \
		assert u.find_spec('Cython') is None, 'Cython in the clean venv'; print('installed:', streamenc.__file__)"
	cd $(INSTALLED) && STREAMENC_TEST_INSTALLED=1 bin/python -m pytest $(CURDIR)/tests -m "not slow and not lerobot" -q -p no:cacheprovider \
		--rootdir $(CURDIR) --ignore $(CURDIR)/tests/test_lerobot.py

# The default sweep of the harness (streamenc bench), with the ring micro-benchmark first.
bench: venv $(LEROBOT)
	mkdir -p $(OUT)
	$(BIN)/python -m pytest bench/test_ring_bench.py --benchmark-only --benchmark-json=$(OUT)/ring.json -q
	$(BIN)/python bench/ring_report.py $(OUT)/ring.json
	HF_HUB_OFFLINE=1 $(BIN)/streamenc bench --out $(OUT)/sweep

# Longer runs behind the tables in docs/benchmarks.md: LeRobot's record loop (~12 min),
# the record loop and the 60 s overload timeline (~15 min).
bench-lerobot: venv $(LEROBOT)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/lerobot_bench.py --out $(OUT)/lerobot

# The record loop's wake-up lateness beside the encoders: 2x480p, 4x480p, 2x720p, 60 s each,
# for LeRobot's png and stream paths and streamenc (~25 min).
bench-loop: venv $(LEROBOT)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/loop_bench.py --out $(OUT)/loop

# The same LeRobot benchmark through lerobot 0.6.1 on Python 3.12.
bench-lerobot06: $(LEROBOT06)
	HF_HUB_OFFLINE=1 $(VENV06)/bin/python bench/lerobot_bench.py --out $(OUT)/lerobot06

# 1 RGB + 1 depth camera at 480p through lerobot 0.6.1: LeRobot's png and stream paths and
# streamenc, then x265 lossless depth against SVT-AV1 RGB per frame.
bench-depth: $(LEROBOT06)
	HF_HUB_OFFLINE=1 $(VENV06)/bin/python bench/depth_bench.py --out $(OUT)/depth

# save_episode over 100 episodes (LeRobot's stream encoder, streamenc), then random access
# to the chunk files against LeRobot's faststart files of the same episodes (lerobot 0.6.1).
bench-chunks: $(LEROBOT06)
	HF_HUB_OFFLINE=1 $(VENV06)/bin/python bench/chunk_bench.py --out $(OUT)/chunks

bench-overload: venv
	mkdir -p $(OUT)
	$(BIN)/python bench/record_bench.py --json $(OUT)/record.jsonl
	$(BIN)/python bench/overload_bench.py --out $(OUT)

lint: venv
	$(BIN)/ruff check streamenc tests bench setup.py
	$(BIN)/ruff format --check streamenc tests bench setup.py
	$(BIN)/mypy

clean:
	rm -rf $(VENV) $(VENV06) build dist *.egg-info csrc/_ring.c streamenc/_ring*.so $(OUT) .pytest_cache .benchmarks .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
