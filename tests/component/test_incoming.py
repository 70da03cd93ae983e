"""Incoming batches against the shipped Sign-MNIST suite: every planted fault is caught by
the right check with the right reason, the clean rows are kept, and a clean batch passes."""

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from keel.core.config import load_dataset_config
from keel.core.errors import DatasetError, KeelError
from keel.validation.incoming import curate_batch, validate_batch
from tests.incoming_data import ALSO_CAUGHT_BY, CASES, PLANTED_ROWS, REPO, clean_batch

CONFIG = REPO / "conf" / "datasets" / "sign-mnist.yaml"


@pytest.fixture(scope="module")
def config():
    return load_dataset_config(CONFIG)


def test_a_clean_batch_passes_with_no_false_alarm(tmp_path, config):
    path = tmp_path / "clean.csv"
    clean_batch().to_csv(path, index=False)
    result = validate_batch(config, str(path), tmp_path / "report")
    assert result.verdict == "accepted" and result.exit_code == 0, result.summary()
    assert result.failures == [] and result.quarantined_rows == 0 and result.clean_rows == 480
    assert result.anomaly["flagged"] == 0 and not any(d["drifted"] for d in result.drift)
    assert {d["check"] for d in result.drift} == {"label distribution", "mean_intensity", "std_intensity",
                                                  "saturated_fraction", "anomaly_score"}
    report = tmp_path / "report"
    assert (report / "docs" / "index.html").exists() and (report / "anomalies.png").stat().st_size > 0
    assert pd.read_parquet(report / "clean.parquet").shape == (480, 785)
    assert json.loads((report / "report.json").read_text())["verdict"] == "accepted"


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_planted_fault_is_caught_by_the_right_check(tmp_path, config, case):
    writer, rule, column, quarantined, verdict = CASES[case]
    path = tmp_path / f"{case}.csv"
    writer(clean_batch(), path)
    before = path.read_bytes()
    result = validate_batch(config, str(path), tmp_path / "report")
    text = result.summary() + "\n" + "\n".join(result.reasons)
    assert result.exit_code == 1 and result.verdict == verdict, text
    assert rule in text, text
    assert result.quarantined_rows == quarantined, text
    reasons = pd.read_csv(tmp_path / "report" / "quarantine.csv", keep_default_na=False)
    if column is not None:
        assert set(reasons["column"]) <= {column} | ALSO_CAUGHT_BY.get(case, set()), reasons
        caught = reasons[reasons["column"] == column]
        assert caught["line"].nunique() == quarantined and caught["rule"].str.contains(rule, regex=False).all(), reasons
    clean = tmp_path / "report" / "clean.parquet"
    if verdict == "rejected":
        assert not clean.exists() and result.clean_rows == 0
    else:
        assert len(pd.read_parquet(clean)) == result.clean_rows == result.rows - quarantined
    assert path.read_bytes() == before  # the landed file is never touched


def test_quarantine_names_row_id_column_value_and_expectation(tmp_path, config):
    frame = clean_batch().astype(object)
    frame.insert(0, "id", [f"img-{i}" for i in range(len(frame))])
    frame.loc[7, "pixel300"] = 300
    frame.loc[7, "pixel301"] = 301  # two problems in one row: two reasons
    frame.loc[3, "pixel5"] = "abc"
    path = tmp_path / "batch.csv"
    frame.to_csv(path, index=False)
    result = validate_batch(config, str(path), tmp_path / "report")
    reasons = pd.read_csv(tmp_path / "report" / "quarantine.csv", keep_default_na=False)
    assert reasons[["row", "line", "id", "column", "value"]].values.tolist() == [
        [4, 5, "img-3", "pixel5", "abc"], [8, 9, "img-7", "pixel300", "300"], [8, 9, "img-7", "pixel301", "301"]]
    assert set(reasons["expectation"]) == {"expect_column_values_to_be_in_set", "expect_column_values_to_be_between"}
    rows = pd.read_csv(tmp_path / "report" / "quarantined_rows.csv")
    assert rows["id"].tolist() == ["img-3", "img-7"] and rows.loc[0, "pixel5"] == "abc"
    clean = pd.read_parquet(tmp_path / "report" / "clean.parquet")
    assert len(clean) == 478 and "img-7" not in set(clean["id"]) and result.clean_rows == 478


def test_every_planted_anomaly_is_flagged_and_no_clean_row(tmp_path, config):
    writer = CASES["inverted"][0]
    path = tmp_path / "inverted.csv"
    writer(clean_batch(), path)
    validate_batch(config, str(path), tmp_path / "report")
    reasons = pd.read_csv(tmp_path / "report" / "quarantine.csv")
    assert sorted(reasons["row"] - 1) == PLANTED_ROWS


def test_an_unreadable_file_is_an_error_not_a_verdict(tmp_path, config):
    path = tmp_path / "batch.csv.gz"
    clean_batch().to_csv(tmp_path / "batch.csv", index=False)
    data = gzip.compress((tmp_path / "batch.csv").read_bytes())
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match="truncated"):
        validate_batch(config, str(path), tmp_path / "report")
    assert not (tmp_path / "report").exists()
    with pytest.raises(DatasetError, match="no such file"):
        validate_batch(config, str(tmp_path / "missing.csv"), tmp_path / "report")


def test_parquet_and_unlabelled_idx_batches(tmp_path, config):
    frame = clean_batch()
    frame.to_parquet(tmp_path / "batch.parquet")
    result = validate_batch(config, str(tmp_path / "batch.parquet"), tmp_path / "p")
    assert result.verdict == "accepted", result.summary()
    images = frame.drop(columns="label").to_numpy(np.uint8)
    header = np.array([0, 0, 8, 3], np.uint8).tobytes() + np.array([len(images), 28, 28], ">u4").tobytes()
    (tmp_path / "batch-idx3-ubyte").write_bytes(header + images.tobytes())
    result = validate_batch(config, str(tmp_path / "batch-idx3-ubyte"), tmp_path / "i")
    assert result.verdict == "accepted" and not result.labelled, result.summary()
    assert "label distribution" not in {d["check"] for d in result.drift}


def test_an_accepted_batch_becomes_a_new_dataset_version_and_a_rejected_one_changes_nothing(tmp_path, keel_home, small_rows):
    from tests.conftest import write_dataset_config

    config = load_dataset_config(write_dataset_config(tmp_path, _csv(tmp_path, small_rows), validation={"min_rows": 10}))
    batch = clean_batch().iloc[:100]
    batch.to_csv(tmp_path / "accepted.csv", index=False)
    validate_batch(config, str(tmp_path / "accepted.csv"), tmp_path / "ok")
    curated = curate_batch(config, tmp_path / "ok")
    assert curated["added"] and curated["rows"] == 480 + 100 and curated["batches"] == 1
    assert curate_batch(config, tmp_path / "ok")["version"] == curated["version"]  # idempotent

    from keel.modalities import ingest

    version = ingest(config).version
    assert version.id == curated["version"] and version.meta["curated_batches"][0]["validation"]["verdict"] == "accepted"
    bad = batch.copy()
    bad["extra"] = 1
    bad.to_csv(tmp_path / "rejected.csv", index=False)
    validate_batch(config, str(tmp_path / "rejected.csv"), tmp_path / "no")
    with pytest.raises(KeelError, match="rejected"):
        curate_batch(config, tmp_path / "no")
    assert ingest(config).version.id == curated["version"]


def _csv(folder, frame):
    path = folder / "base.csv"
    frame.to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- report folders: never destroy user data


def test_an_existing_folder_that_is_not_a_keel_report_is_refused_and_kept(tmp_path, config):
    import subprocess

    from keel.core.errors import OutputError

    path = tmp_path / "clean.csv"
    clean_batch().to_csv(path, index=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    with pytest.raises(OutputError, match=rf"{mine}: the folder exists and is not a Keel report.*--report"):
        validate_batch(config, str(path), mine)
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "my notes"
    (tmp_path / "a-file").write_text("mine too")
    with pytest.raises(OutputError, match=r"a-file: is a file, not a report folder"):
        validate_batch(config, str(path), tmp_path / "a-file")

    # An empty folder holds nothing to lose; a dead writer's staging folder beside it is removed.
    report = tmp_path / "report"
    report.mkdir()
    gone = subprocess.Popen(["true"])
    gone.wait()
    abandoned = tmp_path / f".report.{gone.pid}.0badf00d.tmp"
    (abandoned / "docs").mkdir(parents=True)
    validate_batch(config, str(path), report)
    assert (report / ".keel-report").is_file() and (report / "report.json").is_file()
    assert not abandoned.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "clean.csv", "mine", "report"]
    # A report written before Keel marked its reports is recognised by its contents and replaced.
    (report / ".keel-report").unlink()
    assert validate_batch(config, str(path), report).verdict == "accepted"
    assert (report / ".keel-report").is_file()


def test_a_report_folder_that_cannot_be_written_fails_before_any_work(tmp_path, config):
    """Checked before the input is even read (it does not exist here)."""
    from keel.core.errors import OutputError
    from tests.filesystems import read_only_folder

    (tmp_path / "a-file").write_text("not a folder")
    with read_only_folder(tmp_path / "ro") as ro:
        for report, folder in ((ro / "report", ro), (ro / "new" / "report", ro / "new"),
                               (tmp_path / "a-file" / "x" / "report", tmp_path / "a-file" / "x")):
            with pytest.raises(OutputError, match=rf"{folder}: .*pass --report a folder you can write to"):
                validate_batch(config, str(tmp_path / "missing.csv"), report)


def test_a_full_disk_while_writing_the_report_is_an_output_error_naming_the_folder(tmp_path, config):
    from keel.core.errors import OutputError
    from tests.filesystems import full_folder

    path = tmp_path / "clean.csv"
    clean_batch().to_csv(path, index=False)
    with full_folder(tmp_path / "full") as full:
        with pytest.raises(OutputError, match=rf"{full}: the disk is full"):
            validate_batch(config, str(path), full / "report")
        assert sorted(p.name for p in full.iterdir()) == ["filler"]
