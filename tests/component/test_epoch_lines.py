"""Each finished epoch is one line on the "keel.training" logger, and the `keel` command prints it
plainly on a stdout that is no terminal (a log file, CI, `make run | tee`), where no tqdm bar
shows: a real two-epoch training of the small Sign-MNIST subset. Long scoring and validation
passes say how far they are, alike ("keel.serving", "keel.validation"; here at every table)."""

from __future__ import annotations

import contextlib
import io
import logging
import re

import pytest
import torch

from cli.main import show_progress
from keel.core.config import TrainConfig, load_dataset_config
from keel.data.batches import training_splits
from keel.modalities import ingest
from keel.serving.predict import score_files
from keel.tracking import client as tracking
from keel.training.train import fit
from keel.validation.incoming import first_pass, pixel_rows
from keel.validation.report_files import PixelSpill
from keel.validation.suite import load_suite
from tests.conftest import SIGN_MNIST_CONFIG

NUMBER = r"\d+\.\d{3}"
EPOCH_LINE = re.compile(rf"epoch (?P<epoch>\d+)/(?P<total>\d+)  loss {NUMBER}  accuracy {NUMBER}  val_loss {NUMBER}"
                        rf"  val_accuracy {NUMBER}  [\d,]+ rows/s(?P<left>  (\d+ s|\d+ min|\d+\.\d h) left)?")


@pytest.fixture
def keel_progress(monkeypatch):
    """The `keel` command's progress output (cli.main.show_progress), undone afterwards: the
    "keel" logger's level and handlers, Prefect's extra-loggers setting."""
    monkeypatch.delenv("PREFECT_LOGGING_EXTRA_LOGGERS", raising=False)
    keel = logging.getLogger("keel")
    level, handlers = keel.level, list(keel.handlers)
    show_progress()
    yield
    keel.setLevel(level)
    keel.handlers[:] = handlers


def test_each_epoch_is_one_line_on_a_stdout_that_is_no_terminal(tmp_path, small_config, keel_progress):
    version = ingest(load_dataset_config(small_config), root=tmp_path / "v").version
    train, validation = training_splits(version, TrainConfig(validation_fraction=0.2), torch.device("cpu"))
    stdout = io.StringIO()
    assert not stdout.isatty()
    with contextlib.redirect_stdout(stdout):
        result = fit(train, validation, 24, TrainConfig(epochs=2, batch_size=64, patience=10, time_budget=0))
    lines = stdout.getvalue().splitlines()
    assert len(lines) == result.epochs_run == 2, lines
    matches = [EPOCH_LINE.fullmatch(line) for line in lines]
    assert all(matches), lines
    assert [(m["epoch"], m["total"]) for m in matches] == [("1", "2"), ("2", "2")]
    assert matches[0]["left"] and not matches[1]["left"]  # the time left, until there is none
    for line, epoch in zip(lines, result.history):  # the figures the history (and MLflow) got
        assert f"loss {epoch['train_loss']:.3f}  accuracy {epoch['train_accuracy']:.3f}" in line
        assert f"val_accuracy {epoch['val_accuracy']:.3f}" in line


def _counts(caplog, logger: str, pattern: str) -> list[int]:
    lines = [record.getMessage() for record in caplog.records if record.name == logger]
    matches = [re.fullmatch(pattern, line) for line in lines]
    assert lines and all(matches), lines
    return [int(match[1].replace(",", "")) for match in matches]


def test_scoring_says_how_many_rows_it_scored(tmp_path, small_rows, registered_model, monkeypatch, caplog):
    monkeypatch.setattr("keel.serving.inputs.BATCH_ROWS", 10)  # four tables of 10 rows
    monkeypatch.setattr("keel.serving.predict.PROGRESS_SECONDS", 0.0)
    rows = small_rows.head(40).copy()
    rows.loc[5, "pixel3"] = 999  # one row rejected
    rows.to_csv(tmp_path / "rows.csv", index=False)
    caplog.set_level(logging.INFO, logger="keel.serving")
    summary = score_files(tracking.client(), registered_model["registered"].name, str(tmp_path / "rows.csv"),
                          str(tmp_path / "out.parquet"))
    scored = _counts(caplog, "keel.serving", r"scored ([\d,]+) rows \(1 rejected\) in \d+ s, [\d,]+ rows/s")
    assert scored == [9, 19, 29, 39] and summary.rows_scored == 39 and summary.rows_rejected == 1


def test_validation_says_how_many_rows_it_read(tmp_path, small_rows, monkeypatch, caplog):
    monkeypatch.setattr("keel.validation.incoming.PROGRESS_SECONDS", 0.0)
    small_rows.to_csv(tmp_path / "batch.csv", index=False)
    config = load_dataset_config(SIGN_MNIST_CONFIG)
    caplog.set_level(logging.INFO, logger="keel.validation")
    batch = first_pass(config, pixel_rows(config, str(tmp_path / "batch.csv"), None, None, batch_rows=100),
                       load_suite(config), None, PixelSpill(tmp_path / "spill"))
    read = _counts(caplog, "keel.validation", r"validation: read ([\d,]+) rows in \d+ s, [\d,]+ rows/s")
    assert len(batch.profile) == 480 and read == [100, 200, 300, 400, 480]
