# The two commands: `make demo` (set up, then run the main job) and `make test` (set up, then test).
# Set-up is idempotent: a virtualenv in .venv with the package and its test extras, and espeak-ng
# (Debian) for the synthetic speech clips.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs/demo
DEMO_ARGS ?=
PYTEST_ARGS ?=

.PHONY: demo test test-all setup espeak clean

setup: $(STAMP) espeak

$(STAMP): setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch is pinned (the CPU wheel held on these machines); unpinned it pulls a CUDA build.
	# [tpu]: libtpu for the compile_check job and its tests; CPU runs stay on the CPU backend.
	$(PY) -m pip install -q -e '.[test,tpu]'
	touch $(STAMP)

espeak:
	@command -v espeak-ng >/dev/null 2>&1 || { \
	  echo "installing espeak-ng (synthetic speech clips)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq espeak-ng >/dev/null; }

demo: setup
	$(PY) -m cesar_jax.main --config=configs/demo.py$(if $(DEMO_ARGS),:$(DEMO_ARGS)) --workdir=$(WORKDIR)

test: setup
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-all: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
