# Two set-up commands, both self-contained on a fresh machine:
#   make run    the main job on its built-in default: train a small NaLaFormer on Fashion-MNIST (CPU)
#   make test   the test suite (what CI runs)
# Both create (or refresh, when pyproject.toml changes) a local virtual environment in .venv.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
FMNIST_DIR ?= /usr/share/datasets/fashion-mnist
PYTEST_ARGS ?= -n auto  # pytest-xdist, one worker per core (tests/conftest.py splits the threads)

.PHONY: run test fashion-data clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# the training extras (timm, plots, TensorBoard) for `make run`
$(VENV)/.installed-run: pyproject.toml | $(PY)
	$(PIP) $(TORCH_SPEC)
	$(PIP) -e '.[train]'
	touch $@

# everything for the tests (transformers, triton, pytest, ...)
$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-run
	$(PIP) -e '.[dev]'
	touch $@

# Fashion-MNIST from Debian's package when it is missing and we may install it
fashion-data:
	@if [ ! -e "$(FMNIST_DIR)/train-images-idx3-ubyte.gz" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's dataset-fashion-mnist ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist >/dev/null; \
	  else \
	    echo "Fashion-MNIST is not in $(FMNIST_DIR): install Debian's dataset-fashion-mnist, or run"; \
	    echo "  $(VENV)/bin/nalaformer train --data-dir DIR   (DIR with the four idx files) or --download"; \
	  fi; \
	fi

run: $(VENV)/.installed-run fashion-data
	$(VENV)/bin/nalaformer train --overwrite true

# our suite, then timm's own tests/test_models.py on the nalaformer models (sdist fetched from PyPI once), then
# transformers' common model tests on the NaLa LM (skipped with a message without a transformers tests tree:
# TRANSFORMERS_TESTS_TGZ, or ../shared/third_party/transformers-tests-*.tgz)
test: $(VENV)/.installed-test
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q $(PYTEST_ARGS)
	PYTHON=$(abspath $(PY)) tests/models/run_timm_upstream.sh
	PYTHON=$(abspath $(PY)) tests/models/lm/run_transformers_upstream.sh

clean:
	rm -rf $(VENV) .pytest_cache .cache
