"""Shared fixtures (small real subsets of the bundled data, an isolated Keel home) and the test tiers.

Tiers are folders, and each test gets its folder's marker here (never by hand):
  unit         pure functions: seconds, no MLflow store, no training, no Great Expectations
  component    a real MLflow store, Great Expectations, one-epoch training
  flows        whole Prefect flows and the `keel` command (one session-wide Prefect test harness)
  integration  the team stack on PostgreSQL (fails, never skips, when PostgreSQL does not answer)
  browser      `keel ui`'s pages in a real headless Chromium (Debian's, driven by Playwright), offline
  gpu          CUDA paths: every test is skipped, with NO_GPU as the reason, where no GPU is visible
`make test` runs them all; a tier whose tests were all skipped for any other reason fails the run.
Test files need names unique across tiers (the folders are not packages).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"
TIERS = ("unit", "component", "flows", "integration", "browser", "gpu")  # registered as markers in pyproject.toml
NO_GPU = "no CUDA GPU visible (torch.cuda.is_available() is False): the gpu tier runs where one is"
SIGN_MNIST_CSV = REPO / "data" / "sign-mnist" / "sign_mnist_train.csv.gz"
SIGN_MNIST_CONFIG = REPO / "conf" / "datasets" / "sign-mnist.yaml"

# Keep library and tool chatter off the network and out of the logs.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.pop("MLFLOW_TRACKING_URI", None)  # tests use their own embedded stores


def tier_of(path: str | Path) -> str | None:
    """The tier folder under tests/ that holds `path`, or None outside every tier."""
    path = Path(path).resolve()
    parts = path.relative_to(TESTS).parts if path.is_relative_to(TESTS) else ()
    return parts[0] if len(parts) > 1 and parts[0] in TIERS else None


def cuda_available() -> bool:
    import torch  # heavy: imported only when the gpu tier was collected

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    """Mark every test with its tier folder; skip the gpu tier, with the reason, where no GPU is."""
    no_gpu = None
    for item in items:
        tier = tier_of(item.path)
        if tier is None:
            raise pytest.UsageError(f"{item.nodeid} is in no tier folder: put it under tests/{{{','.join(TIERS)}}}/")
        item.add_marker(getattr(pytest.mark, tier))
        if tier == "gpu":
            no_gpu = (not cuda_available()) if no_gpu is None else no_gpu
            if no_gpu:
                item.add_marker(pytest.mark.skip(reason=NO_GPU))


class TierCheck:
    """Fails the run when a tier collected tests but every one that ran was skipped (a missing
    server, a missing file, a mistyped condition), except the gpu tier skipped for want of a GPU:
    CI must not pass while a whole tier silently did nothing."""

    def __init__(self):
        self.ran: set[str] = set()
        self.skips: dict[str, dict[str, str]] = {}
        self.problems: list[str] = []

    def pytest_runtest_logreport(self, report):
        self.record(report)

    def pytest_collectreport(self, report):
        """A module skipped as a whole (`pytest.skip(..., allow_module_level=True)`, importorskip)."""
        if report.skipped:
            self.record(report)

    def record(self, report):
        tier = tier_of(REPO / report.nodeid.split("::")[0]) if report.nodeid else None
        if tier is None:
            return
        if report.skipped and not hasattr(report, "wasxfail"):
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
            self.skips.setdefault(tier, {})[report.nodeid] = reason.removeprefix("Skipped: ")
        elif report.when == "call" or report.failed:
            self.ran.add(tier)

    def pytest_sessionfinish(self, session):
        for tier, skipped in sorted(self.skips.items()):
            reasons = sorted(set(skipped.values()))
            if tier in self.ran or (tier == "gpu" and reasons == [NO_GPU]):
                continue
            self.problems.append(f"every test of the {tier} tier was skipped ({len(skipped)}): " + "; ".join(reasons))
        if self.problems and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        for problem in self.problems:
            terminalreporter.write_line(f"TIER SKIPPED: {problem}", red=True, bold=True)


def pytest_configure(config):
    config.pluginmanager.register(TierCheck(), "keel-tier-check")


@pytest.fixture(scope="session")
def sign_mnist_rows() -> pd.DataFrame:
    """The first 6,000 rows of the real Sign-MNIST training file."""
    return pd.read_csv(SIGN_MNIST_CSV, nrows=6000)


def stratified_rows(frame: pd.DataFrame, per_class: int, seed: int = 0) -> pd.DataFrame:
    """`per_class` rows of every label, shuffled."""
    parts = [g.sample(n=min(per_class, len(g)), random_state=seed) for _, g in frame.groupby("label")]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="session")
def small_rows(sign_mnist_rows) -> pd.DataFrame:
    """480 real rows, 20 of each of the 24 classes."""
    return stratified_rows(sign_mnist_rows, 20)


def write_dataset_config(folder: Path, csv_path: Path, name: str = "sign-mnist-small", **overrides) -> Path:
    """A copy of the shipped Sign-MNIST config pointing at `csv_path`, with small-data bounds."""
    config = yaml.safe_load(SIGN_MNIST_CONFIG.read_text())
    config["name"] = name
    config["train"] = [{"path": str(csv_path)}]
    config["validation"] = {"min_rows": 50, "max_rows": 100_000}
    config.pop("expectations", None)  # the shipped suite belongs to the full dataset: small copies use the structural one
    config.update(overrides)
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@pytest.fixture
def keel_home(tmp_path, monkeypatch) -> Path:
    """An empty Keel home (data/, mlruns/, reports/) for one test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("KEEL_HOME", str(home))
    return home


@pytest.fixture
def small_config(tmp_path, small_rows) -> Path:
    """A dataset config for the 480-row subset, written as plain CSV."""
    csv = tmp_path / "small.csv"
    small_rows.to_csv(csv, index=False)
    return write_dataset_config(tmp_path, csv)


def images_of(frame: pd.DataFrame) -> np.ndarray:
    return frame.drop(columns=["label"]).to_numpy(dtype=np.uint8).reshape(-1, 28, 28, 1)


@pytest.fixture(scope="session")
def registered_model(tmp_path_factory, small_rows):
    """A model trained 1 epoch on the 480-row subset and registered (v1, champion) in its own
    embedded store. KEEL_HOME points at that store for the whole session unless a test sets
    its own with `keel_home`."""
    from keel.core.config import TrainConfig
    from keel.stages.evaluation import evaluate_stage
    from keel.stages.ingest import ingest_stage
    from keel.stages.registration import promote_stage, register_stage
    from keel.stages.runs import start_run_stage
    from keel.stages.training import load_trained, train_stage
    from keel.tracking.promotion import PromotionPolicy

    home = tmp_path_factory.mktemp("registry-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("KEEL_HOME", str(home))
    csv = home / "small.csv"
    small_rows.to_csv(csv, index=False)
    config = write_dataset_config(home, csv)
    version = ingest_stage(str(config))
    train = TrainConfig(epochs=1, batch_size=64)
    run = start_run_stage(str(config), version, train)
    trained = train_stage(run, version, train, progress=False)
    model, _ = load_trained(trained.model_path, for_inference=True)
    metrics = evaluate_stage(run, version, trained)
    registered = register_stage(run, version, trained, metrics)
    verdict = promote_stage(version, registered, metrics, PromotionPolicy(floor=0.0))
    yield {"home": home, "config": config, "version": version, "run": run, "trained": trained, "registered": registered,
           "model": model, "metrics": metrics, "verdict": verdict}
    patch.undo()
