# The commands the README names. `make run` and `make test` both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test test-unit test-component test-flows test-integration test-gpu bench clean stack stack-down image

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Keel needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: the training flow on the bundled Sign-MNIST data, default settings.
run: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/keel train

test: $(STAMP)
	$(BIN)/python -m pytest

# One tier at a time (tests/<tier>/; see tests/conftest.py). `make test` runs every tier.
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-component: $(STAMP)
	$(BIN)/python -m pytest tests/component

test-flows: $(STAMP)
	$(BIN)/python -m pytest tests/flows

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

test-gpu: $(STAMP)
	$(BIN)/python -m pytest tests/gpu

bench: $(STAMP)
	$(BIN)/python benchmarks/train_sign_mnist.py
	$(BIN)/python benchmarks/score_sign_mnist.py
	$(BIN)/python benchmarks/validate_sign_mnist.py
	$(BIN)/python benchmarks/text.py
	$(BIN)/python benchmarks/train_fruits.py
	$(BIN)/python benchmarks/scale.py

clean:
	rm -rf data/versions data/checkpoints reports mlruns/mlflow.db mlruns/artifacts

# The team stack as local processes (see README "Run it as a team").
stack: $(STAMP)
	$(BIN)/keel stack up

stack-down: $(STAMP)
	$(BIN)/keel stack down

# The Keel image (Dockerfile), with the commit it is built from ("+dirty" with uncommitted
# changes): models registered from it are tagged with that commit.
image:
	docker build --build-arg KEEL_GIT_COMMIT=$$(git rev-parse HEAD)$$(git diff --quiet HEAD -- || echo +dirty) \
		-t $${KEEL_IMAGE:-keel:latest} .
