# The commands the README names. `make run` and `make test` both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
BROWSER := $(VENV)/.chromium

.PHONY: setup run test test-unit test-component test-flows test-integration test-browser test-gpu bench clean stack stack-down image

setup: $(STAMP)

# One line per step says where the minutes go. On a terminal pip shows what it downloads, with
# its progress bars; in a log (CI, `make setup | tee`) it stays quiet rather than add hundreds of lines.
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit("Keel needs Python >= 3.11, found " + sys.version.split()[0]) if sys.version_info < (3, 11) else None'
	@if test -x $(BIN)/python; then echo "[1/3] $(VENV) exists: installing into it"; \
	else echo "[1/3] creating $(VENV) ($(PYTHON) -m venv $(VENV))" && $(PYTHON) -m venv $(VENV); fi
	@echo "[2/3] upgrading pip in $(VENV)"
	@$(BIN)/python -m pip install --upgrade --quiet pip
	@echo "[3/3] installing Keel and its dependencies (pip install -e '.[dev]'): torch and torchvision are large, several minutes on a first install"
	@if test -t 1; then quiet=; else quiet=--quiet; fi; $(BIN)/python -m pip install $$quiet -e '.[dev]'
	@touch $(STAMP)
	@echo "done: $(VENV) is ready"

# The main job: the training flow on the bundled Sign-MNIST data, default settings.
run: $(STAMP)
	PREFECT_SERVER_ANALYTICS_ENABLED=false $(BIN)/keel train

test: $(STAMP) $(BROWSER)
	$(BIN)/python -m pytest

# The browser tier drives Debian's Chromium (Playwright comes with the dev extra): installed
# with apt-get when missing (as root, else through sudo), once.
$(BROWSER):
	@if ! command -v chromium >/dev/null 2>&1; then \
		echo "installing Debian's chromium for the browser tests (apt-get install chromium)"; \
		sudo=; test "$$(id -u)" = 0 || sudo=sudo; \
		$$sudo apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 || \
		($$sudo apt-get update >/dev/null && $$sudo apt-get install -y --no-install-recommends chromium >/dev/null); fi
	@chromium --version
	@mkdir -p $(VENV) && touch $(BROWSER)

# One tier at a time (tests/<tier>/; see tests/conftest.py). `make test` runs every tier.
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

test-component: $(STAMP)
	$(BIN)/python -m pytest tests/component

test-flows: $(STAMP)
	$(BIN)/python -m pytest tests/flows

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

test-browser: $(STAMP) $(BROWSER)
	$(BIN)/python -m pytest tests/browser

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
