# Every target sets up what it needs: on a fresh machine `make run` and `make test` are all
# it takes (Python 3.11 and make).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install run test lint format migrate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Serve on the embedded PostgreSQL (or DATABASE_URL); Ctrl-C stops both.
run: install
	$(BIN)/python -m service serve

## The whole suite (embedded PostgreSQL, or TEST_DATABASE_URL).
test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check service tests loadtests fuzz clientgen examples
	$(BIN)/ruff format --check service tests loadtests fuzz clientgen examples
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix service tests loadtests fuzz clientgen examples
	$(BIN)/ruff format service tests loadtests fuzz clientgen examples

## Apply pending migrations to DATABASE_URL (or the embedded database).
## ARGS="--list" lists them, ARGS="--rollback 1" rolls the last one back.
migrate: install
	$(BIN)/python -m service migrate $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

# Seeding, load tests and benchmarks (issue 3) live beside their scripts.
-include loadtests/loadtest.mk
