# fedclinic: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-fedclinic
# Flower's CLI keeps its SuperLink connections and the local simulation SuperLink here.
export FLWR_HOME ?= $(CURDIR)/.flwr
# The apps run in this virtualenv: Flower must not `uv sync` dependencies at run time
# (hospitals and CI have no internet).
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
# Quiet TensorFlow and Ray in every process `flwr run` starts (common/quiet.py says why):
# Flower's simulation process imports TensorFlow before any fedclinic code runs there.
export TF_CPP_MIN_LOG_LEVEL ?= 3
export RAY_preload_python_modules ?= common.tf_preload
export PYTHONWARNINGS ?= ignore::FutureWarning:ray._private.worker
# `flwr run` starts `flower-superlink` from PATH.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
HOSPITALS ?= 5

.PHONY: demo test test-fast lint install clean nginx

$(STAMP): pyproject.toml | nginx
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

# nginx (Debian's package) is the perimeter in front of the SuperLink (docs/deployment.md);
# the perimeter tests start their own instances on free ports. Installed when missing (root,
# apt-get; the system service is kept from starting), never started here. Checked on every
# run: a `command -v` when nginx is present.
nginx:
	@if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then \
	  if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	    echo "error: nginx is missing. Install it as root: apt-get install nginx" >&2; exit 1; \
	  fi; \
	  echo "Installing nginx: apt-get install nginx"; \
	  guard=; \
	  if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && guard=1; \
	  fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt_install="apt-get install -y -q --no-install-recommends -o DPkg::Lock::Timeout=120 nginx"; \
	  $$apt_install >/dev/null 2>&1 || { apt-get update -q >/dev/null && $$apt_install >/dev/null; }; \
	  status=$$?; \
	  if [ -n "$$guard" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  if [ $$status != 0 ]; then echo "error: apt-get install nginx failed" >&2; exit 1; fi; \
	fi

demo: $(STAMP)
	flwr federation simulation-config --num-supernodes $(HOSPITALS) >/dev/null
	flwr run . --stream

# The full suite: unit and end-to-end tests (real simulations and deployments), then lint.
test: $(STAMP)
	$(BIN)/python -m pytest
	$(MAKE) lint

# The inner loop: unit tests only (no Ray, no real processes), then lint.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not e2e"
	$(MAKE) lint

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .flwr .mypy_cache .pytest_cache .ruff_cache
