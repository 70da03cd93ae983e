"""The layers of the tree, as pyproject.toml's import-linter contracts state them: cli > ops > flows >
tasks > keel; inside keel stages > serving > tracking > validation > training > modalities > models >
data > core; keel never imports Prefect; no import cycle anywhere (docs/architecture.md)."""

import subprocess
import sys
import tomllib
from pathlib import Path

from tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def test_the_import_linter_contracts_hold():
    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    out = subprocess.run([sys.executable, str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report
    assert f"Contracts: {len(contracts)} kept, 0 broken." in report, report
