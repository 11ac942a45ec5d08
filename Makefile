# Swarmscale. `make demo` runs the main job; `make test` passes the tests. Both set up what they need.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed-stamp

.PHONY: venv lint test test-unit test-e2e bench image swarm-up swarm-down demo clean

venv: $(STAMP)

# The venv is made at the repo root when missing and refreshed when pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# Lint and types first (config in pyproject.toml): cheap, and they catch what tests miss.
lint: $(STAMP)
	$(PY) -m ruff check
	$(PY) -m mypy

# Everything: lint, unit, integration on loopback, and end-to-end on a real engine (started when possible).
test: lint
	bash scripts/engine.sh ensure-if-possible
	$(PY) -m pytest -ra

test-unit: $(STAMP)
	$(PY) -m pytest -ra -m 'not e2e'

test-e2e: $(STAMP)
	bash scripts/engine.sh ensure-if-possible
	$(PY) -m pytest -ra -m e2e

bench: $(STAMP)
	bash bench/run.sh

image: $(STAMP)
	bash scripts/swarm.sh image

swarm-up: $(STAMP)
	bash scripts/swarm.sh up

swarm-down:
	bash scripts/swarm.sh down

demo: $(STAMP)
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) build *.egg-info reports .pytest_cache
