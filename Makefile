# Two commands: `make run` (the pipeline on the demo data) and `make test`. Each creates .venv when missing.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1

.PHONY: run test ui bench setup browser postgres clean-data

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP) browser postgres

# Debian's chromium and chromedriver (package chromium-driver), for the tests that open the gallery, the audit report
# and the review page in a headless browser.
browser:
	@{ command -v chromium && command -v chromedriver; } >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "note: install Debian's chromium and chromium-driver packages for the browser tests (needs root)"; fi; }

# Debian's PostgreSQL server, for `atelier services up` (team mode, docs/team.md) and the tests that start it.
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "note: install Debian's postgresql package for team mode and its tests (needs root)"; fi; }

run: $(STAMP)
	$(BIN)/atelier run

test: $(STAMP) browser postgres
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q -n 3 --dist loadfile --durations=15

# The Prefect UI on http://127.0.0.1:4200 and the MLflow UI on http://127.0.0.1:5000, until Ctrl-C.
ui: $(STAMP)
	$(BIN)/atelier ui

bench: $(STAMP)
	$(BIN)/python -m bench

clean-data:
	rm -rf data models reports artworks .atelier/checkpoints
