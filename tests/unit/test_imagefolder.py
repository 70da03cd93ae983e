"""Image-folder ingest on real fruit photos with planted bad files."""

import shutil

import numpy as np
import pytest

from keel.config import load_dataset_config
from keel.datasets import ingest
from keel.errors import ConfigError, DatasetError
from tests.image_data import CLASSES, fruits_config, plant_bad_files, small_fruits


def test_classes_are_inferred_from_the_folders_and_splits_recognised(tmp_path):
    root = small_fruits(tmp_path / "photos")
    config = load_dataset_config(fruits_config(tmp_path, root))
    assert config.class_names == CLASSES and config.labels == list(range(6))
    version = ingest(config, tmp_path / "versions").version
    assert version.meta["train_rows"] == 24 and version.meta["evaluation_rows"] == 12
    assert version.images().shape == (36, 64, 64, 3) and version.images().dtype == np.uint8
    assert sorted(np.unique(version.labels())) == list(range(6))


def test_bad_files_are_quarantined_with_reasons_and_awkward_ones_converted(tmp_path):
    root = small_fruits(tmp_path / "photos")
    planted = plant_bad_files(root)
    result = ingest(load_dataset_config(fruits_config(tmp_path, root)), tmp_path / "versions")
    profile = result.version.profile().set_index("file")
    for file, expected in planted.items():
        action, detail = expected.split(": ", 1)
        row = profile.loc[file]
        if action == "quarantine":
            assert row["status"] == "quarantined" and detail in row["reason"], (file, row["reason"])
        else:
            assert row["status"] == "ok" and detail in row["notes"], (file, row["notes"])
    assert result.version.meta["quarantined"] == 4 and result.version.meta["rows"] == 36 + 4
    quarantine = (result.version.path / "quarantine.csv").read_text()
    assert "train/freshapples/truncated.jpg" in quarantine and "zero-size file" in quarantine
    rotated = profile.loc["train/freshapples/rotated.jpg"]
    assert (rotated["width"], rotated["height"]) == (200, 300)  # EXIF rotation applied before anything else
    deep = result.version.images()[int(profile.loc["train/freshapples/deep.png", "stored"])]
    assert deep.std() > 10 and (deep[..., 0] == deep[..., 1]).all()  # real picture content, grey in RGB


def test_a_rerun_on_unchanged_folders_reuses_the_version_and_a_change_makes_a_new_one(tmp_path):
    root = small_fruits(tmp_path / "photos")
    config = load_dataset_config(fruits_config(tmp_path, root))
    first = ingest(config, tmp_path / "versions")
    again = ingest(config, tmp_path / "versions")
    assert again.reused and again.version.id == first.version.id
    victim = sorted((root / "train" / "freshbanana").iterdir())[0]
    victim.unlink()
    changed = ingest(config, tmp_path / "versions")
    assert not changed.reused and changed.version.id != first.version.id and changed.version.meta["train_rows"] == 23


def test_a_duplicate_across_splits_is_flagged(tmp_path):
    root = small_fruits(tmp_path / "photos")
    photo = sorted((root / "train" / "rottenoranges").iterdir())[0]
    shutil.copy(photo, root / "valid" / "rottenoranges" / "copy.jpg")
    profile = ingest(load_dataset_config(fruits_config(tmp_path, root)), tmp_path / "versions").version.profile()
    flagged = profile[profile["duplicate_across_splits"]]
    assert set(flagged["file"]) == {str(photo.relative_to(root)), "valid/rottenoranges/copy.jpg"}


def test_one_folder_of_classes_is_split_by_the_evaluation_rule(tmp_path):
    root = tmp_path / "photos"
    small_fruits(tmp_path / "staging", per_class=10, valid_per_class=0)
    shutil.move(tmp_path / "staging" / "train", root)
    config = load_dataset_config(fruits_config(tmp_path, root, image_folder={"root": str(root)},
                                               evaluation_split={"fraction": 0.2, "seed": 1}))
    meta = ingest(config, tmp_path / "versions").version.meta
    assert meta["evaluation_rows"] == 12 and meta["train_rows"] == 48


def test_missing_folder_and_too_few_classes_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="image folder not found"):
        load_dataset_config(fruits_config(tmp_path, tmp_path / "nowhere"))
    (tmp_path / "one" / "train" / "apples").mkdir(parents=True)
    (tmp_path / "one" / "valid" / "apples").mkdir(parents=True)
    with pytest.raises(ConfigError, match="at least two class folders"):
        load_dataset_config(fruits_config(tmp_path, tmp_path / "one"))
    root = small_fruits(tmp_path / "photos")
    for photo in (root / "train").rglob("*.*"):
        photo.write_bytes(b"")
    with pytest.raises(DatasetError, match="no usable training images"):
        ingest(load_dataset_config(fruits_config(tmp_path, root)), tmp_path / "versions")


def test_validation_passes_clean_photos_and_fails_a_leak_across_splits(tmp_path):
    from keel.validation import validate_version

    root = small_fruits(tmp_path / "photos")
    config = load_dataset_config(fruits_config(tmp_path, root))
    report = validate_version(ingest(config, tmp_path / "versions").version, config)
    assert report.success, report.summary()
    photo = sorted((root / "train" / "rottenoranges").iterdir())[0]
    shutil.copy(photo, root / "valid" / "rottenoranges" / "copy.jpg")
    report = validate_version(ingest(config, tmp_path / "versions").version, config)
    assert not report.success
    assert [f.rule for f in report.failures] == [
        "no photo may be in two splits (same content in train and evaluation leaks the answer)"]
    assert report.failures[0].unexpected_count == 2
