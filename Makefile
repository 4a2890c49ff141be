# Two entry points for people: `make demo` and `make test`. Everything else is plumbing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

TOOLS  := .tools/bin
TOXIPROXY_VERSION := v2.12.0

.PHONY: demo test setup tools lint typecheck unit scenarios hunt soak docker-images docker-scenarios bench teeth clean

demo: setup
	$(BIN)/harness demo

test: setup lint typecheck unit scenarios

setup: $(STAMP) tools

# Toxiproxy is not packaged for PyPI or Debian: build the real server once from the Go module
# proxy into a project-local folder. Elsewhere, set TOXIPROXY_SERVER to a release binary instead.
tools: $(TOOLS)/toxiproxy-server

$(TOOLS)/toxiproxy-server:
	@if [ -n "$$TOXIPROXY_SERVER" ]; then echo "using TOXIPROXY_SERVER=$$TOXIPROXY_SERVER"; exit 0; fi; \
	command -v go >/dev/null || { echo "Go is needed to build toxiproxy-server (or set TOXIPROXY_SERVER to a release binary)"; exit 1; }; \
	mkdir -p $(TOOLS) && tmp=$$(mktemp -d) && \
	GOBIN=$$tmp CGO_ENABLED=0 go install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION) && \
	GOBIN=$$tmp CGO_ENABLED=0 go install github.com/Shopify/toxiproxy/v2/cmd/cli@$(TOXIPROXY_VERSION) && \
	mv $$tmp/cli $(TOOLS)/toxiproxy-cli && mv $$tmp/server $(TOOLS)/toxiproxy-server && rmdir $$tmp

# Re-install only when the dependency list changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

lint: setup
	$(BIN)/ruff check mock_switch harness tests benchmarks scenarios
	$(BIN)/ruff format --check mock_switch harness tests benchmarks scenarios

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest tests

# Every chaos scenario, against the real Toxiproxy, services and Locust (about 10 minutes). This
# includes scenarios/docker/ (backend: docker), skipped with the reason when no Docker engine answers.
scenarios: setup
	$(BIN)/pytest scenarios/

# A random-chaos hunt against the robust components, for people (not in CI): random fault schedules
# for HUNT_S seconds (10 minutes by default), every one judged by all the checks of its run.
HUNT_S ?= 600
hunt: setup
	HARNESS_CHAOS_HUNT_S=$(HUNT_S) $(BIN)/pytest scenarios/test_random_chaos.py -k robust -s --harness-out reports/hunt

# A soak run for people (not in CI): SOAK_MIN minutes of load (30 by default) at 40 payments/s with a
# fault a minute, then the checks; prints how much the harness and the checkers took (README "Long runs").
SOAK_MIN ?= 30
soak: setup
	$(BIN)/python benchmarks/soak.py --minutes $(SOAK_MIN)

# Docker backend: the wheelhouse (pip, on the host) and the images, with no container registry: a
# Debian base by debootstrap (root), Toxiproxy from .tools/bin. Skips what is already up to date.
docker-images: setup
	$(BIN)/harness images build --offline

# Only the docker scenarios and the docker backend's tests.
docker-scenarios: docker-images
	$(BIN)/pytest scenarios/docker/ tests/test_docker_backend.py

# Every broken variant of the mock against the teeth scenario, and the robust system (about 3 min).
teeth: setup
	$(BIN)/harness teeth

bench: setup
	$(BIN)/python benchmarks/switch_throughput.py --seconds 10

clean:
	rm -rf $(VENV) reports/runs .pytest_cache .mypy_cache .ruff_cache
