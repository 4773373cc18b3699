# memport: `make run` and `make test` set everything up from a fresh clone (Python 3.11 + pip).
PYTHON ?= python3
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
DAGSTER_HOME ?= $(CURDIR)/data/dagster

.PHONY: run test test-all bench bench-ingest bench-export bench-openai bench-zep bench-backup bench-catalog bench-backfill dev lint typecheck clean

# uv lives in its own small venv, installed by pip: nothing is installed by hand.
$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --extra test --extra dev --python $(PYTHON)
	touch $@

# The Dagster instance's settings (run monitoring on), written once; edits to the copy are kept.
$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	cp -n pipelines/orchestration/dagster.yaml $@

## run: set up, then ingest the sample dumps in data/landing/ and build the catalog
run: $(VENV)/.synced $(DAGSTER_HOME)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME) $(VENV)/bin/memport run

## test: set up, then run the default test suite (slow and benchmark tests skipped)
test: $(VENV)/.synced
	$(VENV)/bin/pytest -n 2

## test-all: also the slow tests (memory measurements, run one at a time so they measure alone)
test-all: $(VENV)/.synced
	$(VENV)/bin/pytest -n 2 -m "not bench and not slow"
	$(VENV)/bin/pytest -p no:xdist -m slow

## bench: every benchmark (each prints its figures and PASS/FAIL against its targets)
bench: bench-ingest bench-export bench-openai bench-zep bench-backup bench-catalog bench-backfill

## bench-ingest: Mem0 ingest against the DuckDB floor (N=1000000 by default; BENCH_N=... to change)
bench-ingest: $(VENV)/.synced
	$(VENV)/bin/python -m tests.bench.ingest_bench

## bench-openai: a 200 MB ChatGPT conversations.json (BENCH_OPENAI_MB=...), peak memory < 1 GiB
bench-openai: $(VENV)/.synced
	$(VENV)/bin/python -m tests.bench.openai_bench

## bench-zep: a 200 MB Graphiti edge dump (BENCH_ZEP_MB=...), peak memory < 1 GiB
bench-zep: $(VENV)/.synced
	$(VENV)/bin/python -m tests.bench.zep_bench

## bench-export: the export benchmark (every format) against DuckDB COPY and Polars sink_* floors
bench-export: $(VENV)/.synced
	$(VENV)/bin/python -m tests.bench.export_bench

## bench-backup: first snapshot, no-change snapshot and full restore of a 1,000,000-episode store
bench-backup: $(VENV)/.synced
	$(VENV)/bin/python -m tests.bench.backup_bench

## bench-catalog: analyst queries and catalog refresh (BENCH_SIZES=episodes:dumps,... default 1M and 10M over 2,000 dumps)
bench-catalog: $(VENV)/.synced
	$(VENV)/bin/python -m tests.bench.catalog_bench

## bench-backfill: a backfill of 200 small dumps through a real `dagster dev` (GraphQL) against `memport run` on them (target <= 2x)
bench-backfill: $(VENV)/.synced
	$(VENV)/bin/python -m tests.bench.backfill_bench $(BENCH_BACKFILL_DUMPS)

## dev: the Dagster UI on http://127.0.0.1:3000 over this repository's workspace
# `dagster dev` warns that it is superseded by `dg dev` (the dagster-dg-cli package, not installed
# here); that one message, and only it, is not shown.
dev: $(VENV)/.synced $(DAGSTER_HOME)/dagster.yaml
	DAGSTER_HOME=$(DAGSTER_HOME) PYTHONWARNINGS='ignore:Function `dev_command` is superseded' \
		$(VENV)/bin/dagster dev -w workspace.yaml

lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.synced
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) $(TOOLS) data/store data/episodes.duckdb data/dagster data/exports data/backups
