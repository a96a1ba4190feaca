# Thin wrappers; each target works on a fresh machine (it creates .venv when missing).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
MODEL_STORE ?= model_store
MODEL_NAME ?= demo
STAMP := $(VENV)/.installed

.PHONY: setup model serve train-demo test bench bench-rounds bench-mobilenet lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"  # serve + train + the test tools
	touch $(STAMP)

setup: $(STAMP)

# The served model must exist: the demo one is trained when missing, any other is an error.
model: setup
	@if [ -z "$$(ls -d $(MODEL_STORE)/$(MODEL_NAME)/[0-9]* 2>/dev/null)" ]; then \
		if [ "$(MODEL_NAME)" != demo ]; then \
			echo "no model $(MODEL_NAME) in $(MODEL_STORE)"; exit 1; fi; \
		echo "no demo model in $(MODEL_STORE): training it first (about 3 minutes)"; \
		$(VENV)/bin/mmserve-train --demo --model-store $(MODEL_STORE); \
	fi

# Serve $(MODEL_NAME) on port $(PORT); trains the demo model first when the store lacks it.
serve: model
	$(VENV)/bin/mmserve serve --host 0.0.0.0 --port $(PORT) \
		--model-store $(MODEL_STORE) --model-name $(MODEL_NAME)

train-demo: setup
	$(VENV)/bin/mmserve-train --demo --model-store $(MODEL_STORE)

# The suite in TEST_WORKERS processes (pytest-xdist; TEST_WORKERS=0: in this one). Tests
# are handed out one by one ("worksteal"), not a module to a process: the module schedule
# tells tests apart by id, and the schema tests share one id, so it would run one of them.
TEST_WORKERS ?= 2
test: setup
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist worksteal

# This service vs the constant-answer HTTP floor, a naive endpoint, the peers (mosec,
# MLServer; each in its own venv under bench/.peers/, created on first use) and the
# in-process limit, one after the other: about 8 minutes, plus the peers' venvs the first
# time. Drives the servers with wrk when it is installed (apt-get install wrk) and says
# loudly when it falls back to the Python generator. Prints the tables, writes
# bench/results/<UTC time>.json and rewrites BENCHMARKS.md. Trains the demo model first
# when the store lacks it. Extra options, e.g.:
# make bench BENCH_ARGS="--workers 1,2 --duration 5 --peers mosec --skip naive"
bench: model
	$(VENV)/bin/python -m bench.run --model-store $(MODEL_STORE) --model-name $(MODEL_NAME) \
		$(BENCH_ARGS)

# The closed loop of the service (2 workers) and mosec at concurrency 32 and 64, repeated on
# fresh servers for 5 rounds (about 8 minutes): each figure's median and range, and the
# service's req/s over mosec's paired within each round, to tell a difference from the
# spread between runs. Prints Markdown; writes bench/results/rounds-<UTC time>.json.
bench-rounds: model
	$(VENV)/bin/python -m bench.rounds --model-store $(MODEL_STORE) --model-name $(MODEL_NAME) \
		--workers 2 $(BENCH_ARGS)

# The same with mobilenet_v3_small at 224x224 (weights none), where the model dominates the
# cost; trains it first (a few minutes) when the store lacks it; writes
# bench/BENCHMARKS-mobilenet.md.
bench-mobilenet: setup
	$(VENV)/bin/python -m bench.run --model-store $(MODEL_STORE) --model-profile mobilenet \
		$(BENCH_ARGS)

lint: setup
	$(VENV)/bin/ruff check service tests bench
	$(VENV)/bin/ruff format --check service tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
