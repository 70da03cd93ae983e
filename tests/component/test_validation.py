import json

import pytest

from keel.core.config import load_dataset_config
from keel.modalities import ingest
from keel.validation.checks import validate_version
from tests.bad_data import CASES
from tests.conftest import write_dataset_config


def test_clean_rows_pass_and_write_data_docs(tmp_path, small_config):
    config = load_dataset_config(small_config)
    version = ingest(config, root=tmp_path / "v").version
    report = validate_version(version, config, tmp_path / "docs")
    assert report.success, report.summary()
    assert report.failures == [] and report.rows == 480 and report.expectations == 17  # 16 + the leakage check
    assert (tmp_path / "docs" / "index.html").exists()
    assert json.loads((tmp_path / "docs" / "report.json").read_text())["success"] is True


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_planted_fault_is_caught_with_its_reason(tmp_path, small_rows, case):
    writer, rule, example = CASES[case]
    csv = tmp_path / f"{case}.csv"
    writer(small_rows, csv)
    config = load_dataset_config(write_dataset_config(tmp_path, csv, name=case))
    version = ingest(config, root=tmp_path / "v").version
    report = validate_version(version, config, tmp_path / "docs")
    assert not report.success
    assert not version.images_stored or case == "class-missing"
    text = report.summary()
    assert rule in text, text
    assert example in text, text
    assert (tmp_path / "docs" / "index.html").exists()


def test_class_share_bounds_flag_a_starved_class(tmp_path, small_rows):
    rows = small_rows[(small_rows["label"] != 5) | (small_rows.index % 10 == 0)]  # class F keeps ~2 of 20 rows
    csv = tmp_path / "starved.csv"
    rows.to_csv(csv, index=False)
    config = load_dataset_config(write_dataset_config(tmp_path, csv))
    report = validate_version(ingest(config, root=tmp_path / "v").version, config)
    [failure] = report.failures
    assert failure.rule.startswith("each class's share must be at least") and failure.on_failure == "class_share"
    assert failure.examples[0]["class_name"] == "F"
