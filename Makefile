# The two commands: `make dev` runs the whole bot locally, `make test` runs the test suite.
# Both bootstrap a .venv with the package and its dev extras (embedded PostgreSQL and Redis) on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: dev test chat migrate check bench clean llama

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

dev: $(STAMP)
	$(BIN)/wabot dev

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The optional test tier against a real llama.cpp server (tests/test_llama_server.py) needs llama-cpp-python, which
# has no wheel on PyPI: compile one (3-10 minutes) into the cache that tier installs from.
LLAMA_WHEELS := $(or $(WABOT_WHEEL_CACHE),$(HOME)/.cache/wabot/wheels)
llama: $(STAMP)
	$(BIN)/python -m pip wheel --no-deps llama-cpp-python==0.3.36 -w $(LLAMA_WHEELS)

chat: $(STAMP)
	$(BIN)/wabot chat

migrate: $(STAMP)
	$(BIN)/wabot migrate

check: $(STAMP)
	$(BIN)/wabot check

clean:
	rm -rf .data .pytest_cache
