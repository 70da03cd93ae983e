"""Near-duplicate groups, group-aware splits and the leakage figures ingest records, on real Sign-MNIST rows
and the bundled fruit photos."""

import shutil

import numpy as np
import pytest

from keel.core.config import load_dataset_config
from keel.modalities import ingest
from keel.core.errors import ConfigError, DatasetError
from keel.data.neardup import PixelFeatures, group_ids
from keel.data.splits import stratified_group_split
from tests.conftest import images_of, stratified_rows, write_dataset_config
from tests.image_data import fruits_config, small_fruits


def _altered_copies(image: np.ndarray, rng) -> dict[str, np.ndarray]:
    pixels = image.astype(np.float32)
    return {
        "noised": np.clip(pixels + rng.normal(0, 6, image.shape), 0, 255),
        "brighter": np.clip(pixels * 1.15, 0, 255),
        "lower contrast": (pixels - pixels.mean()) * 0.8 + pixels.mean(),
    }


def test_altered_copies_share_a_group_and_other_photos_of_the_letter_do_not(sign_mnist_rows):
    rng = np.random.default_rng(0)
    images = images_of(sign_mnist_rows)
    labels = sign_mnist_rows["label"].to_numpy()
    first = images[0]
    same_letter = np.flatnonzero(labels == labels[0])
    features = PixelFeatures().features(images[same_letter])
    # Other photos of the same letter: the least similar to the first image.
    others = same_letter[np.argsort(features @ features[0])[:3]]
    copies = [c.astype(np.uint8) for c in _altered_copies(first, rng).values()]
    batch = np.stack([first, *copies, *images[others]])
    groups = group_ids(PixelFeatures().features(batch), 0.97, "test").ids
    assert len(set(groups[:4])) == 1, groups  # the image and its three altered copies
    assert not set(groups[4:]) & {groups[0]}, groups


def test_a_shifted_copy_joins_its_group_with_max_shift(sign_mnist_rows):
    image = images_of(sign_mnist_rows)[0]
    shifted = np.zeros_like(image)
    shifted[:, 1:] = image[:, :-1]  # one pixel to the right, the left column lost
    extractor = PixelFeatures()
    features = extractor.features(np.stack([image, shifted]))
    assert group_ids(features, 0.97, "test").count == 2  # unshifted cosine is ~0.8
    assert group_ids(features, 0.97, "test", extractor.shape(image.shape), max_shift=1).count == 1


def test_group_split_keeps_groups_whole_and_classes_stratified():
    labels = np.repeat(np.arange(4), 100)
    groups = np.repeat(np.arange(40), 10)  # 10 groups of 10 per class
    picked = stratified_group_split(labels, groups, 0.2, seed=3)
    rest = np.setdiff1d(np.arange(400), picked)
    assert not set(groups[picked]) & set(groups[rest])
    assert (np.bincount(labels[picked], minlength=4) == 20).all()
    np.testing.assert_array_equal(picked, stratified_group_split(labels, groups, 0.2, seed=3))
    assert not np.array_equal(picked, stratified_group_split(labels, groups, 0.2, seed=4))


def test_ingest_splits_sign_mnist_rows_by_group_deterministically(tmp_path, sign_mnist_rows):
    rows = stratified_rows(sign_mnist_rows, 100)
    csv = tmp_path / "rows.csv"
    rows.to_csv(csv, index=False)
    config = load_dataset_config(write_dataset_config(tmp_path, csv))
    version = ingest(config, root=tmp_path / "a").version
    groups = version.groups()
    train, evaluation = version.indices("train"), version.indices("evaluation")
    assert len(train) + len(evaluation) == len(rows)
    assert not set(groups[train]) & set(groups[evaluation])
    split = version.meta["evaluation_split"]
    assert split["kind"] == "group" and split["straddling_groups"] == 0
    assert split["grouping"]["groups"] == groups.max() + 1 < len(rows)  # near-copies were joined
    assert version.split_description.startswith(f"group-aware split: {len(evaluation):,} evaluation rows")
    again = ingest(config, root=tmp_path / "b").version
    np.testing.assert_array_equal(again.indices("evaluation"), evaluation)
    np.testing.assert_array_equal(again.groups(), groups)


def test_bad_grouping_settings_name_the_file_and_field(tmp_path, small_rows):
    csv = tmp_path / "rows.csv"
    small_rows.to_csv(csv, index=False)
    path = write_dataset_config(tmp_path, csv, group_column="signer")
    with pytest.raises(DatasetError, match=r"sign-mnist-small\.yaml: group_column 'signer' is not a column of .*rows\.csv"):
        ingest(load_dataset_config(path), root=tmp_path / "v")
    for threshold in (0, 1.5):
        path = write_dataset_config(tmp_path, csv, evaluation_split={"threshold": threshold})
        with pytest.raises(ConfigError, match=r"sign-mnist-small\.yaml is invalid: evaluation_split\.threshold"):
            load_dataset_config(path)
    path = write_dataset_config(tmp_path, csv, evaluation_split={"by": "column"})
    with pytest.raises(ConfigError, match="evaluation_split.by: 'column' needs group_column"):
        load_dataset_config(path)


def test_one_folder_of_photos_is_split_in_whole_groups(tmp_path):
    root = tmp_path / "photos"
    small_fruits(tmp_path / "staging", per_class=10, valid_per_class=0)
    shutil.move(tmp_path / "staging" / "train", root)
    photo = sorted((root / "freshoranges").iterdir())[0]
    shutil.copy(photo, root / "freshoranges" / "copy.jpg")  # a group of two
    config = load_dataset_config(fruits_config(tmp_path, root, image_folder={"root": str(root)},
                                               evaluation_split={"fraction": 0.3, "seed": 2}))
    version = ingest(config, tmp_path / "versions").version
    groups = version.groups()
    assert not set(groups[version.indices("train")]) & set(groups[version.indices("evaluation")])
    profile = version.profile()
    pair = profile[profile["file"].isin([str(photo.relative_to(root)), "freshoranges/copy.jpg"])]
    assert pair["group"].nunique() == 1 and pair["split"].nunique() == 1
