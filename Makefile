# imagebank: `make run` builds the demo archive and serves it (http://127.0.0.1:8470/);
# `make test` runs every check and test. Both create the virtual environment first.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared/data
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: run test lint typecheck contracts unit bench bench-smoke clean venv openapi confidentiality-table ohif

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,postgres]'
	touch $@

venv: $(BIN)/.installed

# The OHIF viewer served at /ohif/ (decision 0032): `npm pack @ohif/app`, pinned and verified,
# its dist/ in .ohif/ (git-ignored). Nothing is fetched again while the stamp is there.
OHIF_STAMP := .ohif/ohif.json

$(OHIF_STAMP): scripts/fetch_ohif.py
	$(PYTHON) scripts/fetch_ohif.py --dest .ohif

ohif: $(OHIF_STAMP)

run: venv ohif
	$(BIN)/imagebank demo --shared $(SHARED)
	$(BIN)/imagebank serve --demo-admin --dicom-port 11112

openapi: venv
	$(BIN)/python scripts/update_openapi_snapshot.py

# PS3.15 Table E.1-1 as Python, from ../shared/data/dicom-standard/ (never typed by hand).
confidentiality-table: venv
	$(BIN)/python scripts/generate_confidentiality_table.py

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src/imagebank/domain

typecheck: venv
	$(BIN)/mypy

contracts: venv
	$(BIN)/lint-imports --no-cache

unit: venv ohif
	$(BIN)/pytest -n 2 --timeout 600 -q

test: lint typecheck contracts unit bench-smoke

bench-smoke: venv
	$(BIN)/python benchmarks/run_all.py --smoke

bench: venv
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) imagebank-data .pytest_cache .mypy_cache .ruff_cache
