# The two commands: `make dev` runs the whole bot locally, `make test` runs the test suite.
# Both bootstrap a .venv with the package and its dev extras (embedded PostgreSQL and Redis) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: dev test chat migrate check bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

dev: $(STAMP)
	$(BIN)/wabot dev

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

chat: $(STAMP)
	$(BIN)/wabot chat

migrate: $(STAMP)
	$(BIN)/wabot migrate

check: $(STAMP)
	$(BIN)/wabot check

clean:
	rm -rf .data .pytest_cache
