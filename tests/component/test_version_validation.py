"""Validation of stored dataset versions with Great Expectations: leakage across splits (near copies in
pixel tables and photos, grouped splits) and exact duplicates across image-folder splits."""

import shutil

import numpy as np

from keel.core.config import load_dataset_config
from keel.modalities import ingest
from keel.validation.checks import validate_version
from tests.conftest import stratified_rows, write_dataset_config
from tests.image_data import fruits_config, small_fruits


def test_group_column_is_honoured(tmp_path, sign_mnist_rows):
    rows = stratified_rows(sign_mnist_rows, 30)
    signers = np.array([f"signer-{i % 7}" for i in range(len(rows))])
    rows = rows.copy().assign(signer=signers)
    csv = tmp_path / "signed.csv"
    rows.to_csv(csv, index=False)
    config = load_dataset_config(write_dataset_config(tmp_path, csv, group_column="signer",
                                                      evaluation_split={"by": "column", "fraction": 0.2, "seed": 0}))
    version = ingest(config, root=tmp_path / "v").version
    assert version.images().shape == (len(rows), 28, 28, 1)  # the signer column is not a pixel
    groups = version.groups()
    assert version.meta["evaluation_split"]["grouping"]["groups"] == 7
    for signer in np.unique(signers):  # one group per signer
        assert len(set(groups[signers == signer])) == 1
    evaluation_signers = set(signers[version.indices("evaluation")])
    assert evaluation_signers and not evaluation_signers & set(signers[version.indices("train")])
    assert validate_version(version, config).success


def test_leakage_check_flags_a_random_split_and_passes_the_group_split(tmp_path, sign_mnist_rows):
    csv = tmp_path / "rows.csv"
    sign_mnist_rows.to_csv(csv, index=False)  # 6,000 rows of the shipped file
    grouped = load_dataset_config(write_dataset_config(tmp_path, csv, name="grouped"))
    random = load_dataset_config(write_dataset_config(tmp_path, csv, name="random", evaluation_split={"by": "random"}))
    report = validate_version(ingest(random, root=tmp_path / "v").version, random)
    assert report.success  # a warning by default ...
    assert [w.column for w in report.warnings] == ["near_copy_share"]
    assert "this split cannot measure generalisation" in report.summary()
    leak = ingest(random, root=tmp_path / "v").version.meta["leakage"]["evaluation"]
    assert leak["near_copy_share"] > 0.9 and leak["nn_accuracy"] > 0.99
    report = validate_version(ingest(grouped, root=tmp_path / "v").version, grouped)
    assert report.success and not report.warnings, report.summary()
    leak = ingest(grouped, root=tmp_path / "v").version.meta["leakage"]["evaluation"]
    assert leak["near_copy_share"] < 0.05 and leak["nn_accuracy"] < 0.95
    # ... and a stop when the dataset says so.
    strict = load_dataset_config(write_dataset_config(tmp_path, csv, name="random", evaluation_split={"by": "random"},
                                                      validation={"min_rows": 50, "stop_on_leak": True}))
    report = validate_version(ingest(strict, root=tmp_path / "v").version, strict)
    assert not report.success and report.failures[0].column == "near_copy_share"


def test_a_near_identical_photo_across_fruit_splits_is_flagged(tmp_path):
    from PIL import Image, ImageEnhance

    root = small_fruits(tmp_path / "photos", per_class=4, valid_per_class=2)
    config = load_dataset_config(fruits_config(tmp_path, root))
    clean = ingest(config, tmp_path / "versions").version.meta["leakage"]["evaluation"]
    assert clean["near_copies"] == 0
    # Re-encoded, slightly brighter and resized: exact hashing cannot see it.
    photo = sorted((root / "train" / "rottenapples").iterdir())[0]
    with Image.open(photo) as image:
        altered = ImageEnhance.Brightness(image.convert("RGB")).enhance(1.08)
        altered.resize((altered.width * 9 // 10, altered.height * 9 // 10)).save(
            root / "valid" / "rottenapples" / "near-copy.jpg", quality=80)
    version = ingest(config, tmp_path / "versions").version
    leak = version.meta["leakage"]["evaluation"]
    assert leak["near_copies"] == 1
    profile = version.profile()
    stored = profile[profile["status"] == "ok"].reset_index(drop=True)
    assert stored["file"][leak["examples"][0]["row"]] == "valid/rottenapples/near-copy.jpg"
    assert stored["file"][leak["examples"][0]["train_row"]] == str(photo.relative_to(root))
    assert not profile["duplicate_across_splits"].any()  # the exact check misses it
    report = validate_version(version, config)
    assert [w.column for w in report.warnings] == ["near_copy_share"]  # 1 of 13 evaluation photos


def test_validation_passes_clean_photos_and_fails_a_leak_across_splits(tmp_path):
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
