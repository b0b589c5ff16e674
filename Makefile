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

.PHONY: demo test test-all bench setup espeak clean

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

# Side-by-side GRPO step: cesar_jax vs TRL and Tunix, each peer in its own virtualenv.
BENCH := .bench
$(BENCH)/trl/.installed:
	test -x $(BENCH)/trl/bin/python || $(PYTHON) -m venv $(BENCH)/trl
	$(BENCH)/trl/bin/pip install -q torch==2.13.0 transformers safetensors trl datasets tokenizers
	touch $@
$(BENCH)/tunix/.installed:
	test -x $(BENCH)/tunix/bin/python || $(PYTHON) -m venv $(BENCH)/tunix
	$(BENCH)/tunix/bin/pip install -q "jax[cpu]==$$($(PY) -c 'import jax; print(jax.__version__)')" \
	  "flax==$$($(PY) -c 'import flax; print(flax.__version__)')" google-tunix
	touch $@

bench: setup $(BENCH)/trl/.installed $(BENCH)/tunix/.installed
	$(PY) benchmarks/grpo_step.py --json $(BENCH)/grpo_step.json

clean:
	rm -rf $(VENV) $(BENCH) runs .pytest_cache .hypothesis
