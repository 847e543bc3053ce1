# clipkit: `make lab` (JupyterLab on the notebooks), `make run` (execute them headless), `make test`.
#
# Each target creates or refreshes .venv on first use and reinstalls only when pyproject.toml
# changed. To use an environment you already have (conda, Colab), pass its interpreter:
#     make test PYTHON=python
# and nothing is created: the packages are installed into it only if clipkit is missing there.

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
BOOTSTRAP_PYTHON ?= python3
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
TUTORIALS := $(sort $(wildcard tutorials/*.ipynb))
# Debian packages: offline data sets, and the browser the Gradio UI test drives.
DATA_PACKAGES := dataset-fashion-mnist fonts-noto-color-emoji
TEST_PACKAGES := $(DATA_PACKAGES) chromium
PORT ?= 8888
PYTEST_ARGS ?=
# Seconds any one cell may run under `make run` (full parameters: training cells take minutes on a
# laptop CPU); a hung kernel still fails. Tests use the CI parameters and clipkit's 600 s.
RUN_CELL_TIMEOUT ?= 1800

ifeq ($(filter command line environment,$(origin PYTHON)),)
  PY := $(VENV)/bin/python
  ENV_READY := $(VENV)/.installed
else
  PY := $(PYTHON)
  ENV_READY := external-env
endif

# Tests and CI never reach a model hub; without this a pretrained tag takes ~47 s to fail.
export HF_HUB_OFFLINE ?= 1
export GRADIO_ANALYTICS_ENABLED ?= False
# No MPLBACKEND: kernels inherit the environment, and MPLBACKEND=agg hides every figure in `make lab`
# and `make run`. Tests keep their headless backend inside the test process (tests/conftest.py).

.PHONY: help lab run test test-fast demo space tutorials clean-notebooks system-data system-test external-env clean

help:
	@echo "make lab             JupyterLab on notebooks/ with the 'clipkit' kernel (port $(PORT))"
	@echo "make run             execute every notebook headless into build/notebooks/, print metrics"
	@echo "make test            the whole test suite, notebooks included"
	@echo "make test-fast       unit tests only (no notebooks, nothing marked slow)"
	@echo "make demo            the Gradio app for notebook 05's model (trained first if missing); MODEL=open_clip:ViT-B-32:laion2b_s34b_b79k, PORT=7861, DEMO_ARGS=--share"
	@echo "make space DIR=d     a folder that runs as a Hugging Face Space (MODEL= as for demo; default notebook 05's model)"
	@echo "make tutorials      regenerate tutorials/ (exercise versions) from notebooks/"
	@echo "make clean-notebooks strip outputs before committing"
	@echo "Use an existing environment with PYTHON=python, e.g. make test PYTHON=python"

$(VENV)/.installed: pyproject.toml
	@test -x $(VENV)/bin/python || $(BOOTSTRAP_PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

external-env:
	@$(PY) -c "import clipkit, pytest, papermill" 2>/dev/null || $(PY) -m pip install -e '.[dev]'

# apt-installs the Debian packages named in $(1) when apt exists and they are missing;
# elsewhere says what to install (the code also names them when the data is absent).
define ensure_debian_packages
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	    || { echo "apt-get could not install:$$missing" >&2; exit 1; }; \
	elif command -v apt-get >/dev/null 2>&1 && command -v sudo >/dev/null 2>&1; then \
	  sudo apt-get install -y $$missing; \
	else \
	  echo "Note: install$$missing (or see README: Fashion-MNIST and emoji need them; notebooks skip what is absent)."; \
	fi
endef

system-data:
	$(call ensure_debian_packages,$(DATA_PACKAGES))

system-test:
	$(call ensure_debian_packages,$(TEST_PACKAGES))

# Registers the 'clipkit' kernel inside this environment (not per user: each checkout runs its own
# code), then JupyterLab on 127.0.0.1 rooted at the checkout, opening on notebooks/.
# LAB_ARGS go to jupyter lab, e.g. LAB_ARGS=--no-browser.
lab: $(ENV_READY) system-data
	$(PY) -m clipkit.notebook lab --port $(PORT) $(LAB_ARGS)

run: $(ENV_READY) system-data
	$(PY) -m clipkit.notebook run --out build/notebooks --timeout $(RUN_CELL_TIMEOUT) $(NOTEBOOKS)

test: $(ENV_READY) system-test
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: $(ENV_READY)
	$(PY) -m pytest -m "not slow and not notebooks" $(PYTEST_ARGS)

# The Gradio app for notebook 05's model, on 127.0.0.1. Without that model it trains one first
# (progress bar, time estimate, saved every few dozen steps: stop and start again to resume).
# PORT=7861 serves on another port (default 7860: PORT's 8888 is lab's); DEMO_ARGS go to
# `python -m clipkit.app`, e.g. DEMO_ARGS=--share for a temporary public link. MODEL= serves another
# model: a checkpoint folder, open_clip:NAME[:TAG or weights file] or hf:ID-or-folder.
demo: $(ENV_READY) system-data
	@$(PY) -m clipkit.app $(if $(MODEL),--model $(MODEL),--from-notebook-checkpoint) $(if $(filter-out file default,$(origin PORT)),--port $(PORT)) $(DEMO_ARGS)

# A folder that runs as a Hugging Face Space as it stands: make space DIR=my-space MODEL=runs/mini-clip
space: $(ENV_READY)
	@test -n "$(DIR)" || { echo "make space needs DIR=folder to write (and MODEL=, default notebook 05's model)"; exit 2; }
	$(PY) -m clipkit.app export $(DIR) --model "$(or $(MODEL),$$($(PY) -c 'from clipkit.env import checkpoint_dir; print(checkpoint_dir() / "mini-clip")'))"

tutorials: $(ENV_READY)
	$(PY) -m clipkit.exercises generate

clean-notebooks: $(ENV_READY)
	$(PY) -m clipkit.notebook clean $(NOTEBOOKS) $(TUTORIALS)

clean:
	rm -rf build .pytest_cache
