import gzip
import struct

import numpy as np
import pytest

from keel.config import load_dataset_config
from keel.datasets import class_indices, ingest
from keel.errors import DatasetError
from keel.splits import stratified_split
from tests.conftest import images_of, write_dataset_config


def test_ingest_stores_uint8_version_and_reuses_it(tmp_path, small_config, small_rows):
    config = load_dataset_config(small_config)
    first = ingest(config, root=tmp_path / "versions")
    assert not first.reused
    version = first.version
    images = version.images()
    assert images.dtype == np.uint8 and images.shape == (480, 28, 28, 1)
    np.testing.assert_array_equal(images, images_of(small_rows))
    np.testing.assert_array_equal(version.labels(), small_rows["label"].to_numpy())
    again = ingest(config, root=tmp_path / "versions")
    assert again.reused and again.version.id == version.id


def test_evaluation_split_is_fixed_stratified_and_disjoint(tmp_path, small_config):
    version = ingest(load_dataset_config(small_config), root=tmp_path / "v").version
    train, evaluation = version.indices("train"), version.indices("evaluation")
    assert len(np.intersect1d(train, evaluation)) == 0
    assert len(train) + len(evaluation) == 480
    counts = np.bincount(class_indices(version.labels()[evaluation], version.meta["labels"]), minlength=24)
    assert (counts >= 1).all() and abs(len(evaluation) - 72) <= 24  # about 15 % of 20 rows of every class, in whole groups
    other = ingest(load_dataset_config(small_config), root=tmp_path / "w").version
    np.testing.assert_array_equal(other.indices("evaluation"), evaluation)
    assert other.meta["evaluation_ids_sha256"] == version.meta["evaluation_ids_sha256"]


def test_stratified_split_keeps_a_row_of_tiny_classes():
    labels = np.array([0] * 10 + [1] * 2)
    picked = stratified_split(labels, 0.15, seed=0)
    assert sorted(labels[picked]) == [0, 0, 1]


def test_gzip_and_plain_csv_give_the_same_version(tmp_path, small_rows):
    plain, zipped = tmp_path / "rows.csv", tmp_path / "rows.csv.gz"
    small_rows.to_csv(plain, index=False)
    small_rows.to_csv(zipped, index=False, compression="gzip")
    a = ingest(load_dataset_config(write_dataset_config(tmp_path, plain, name="a")), root=tmp_path / "v").version
    b = ingest(load_dataset_config(write_dataset_config(tmp_path, zipped, name="b")), root=tmp_path / "v").version
    np.testing.assert_array_equal(a.images(), b.images())


def test_sha256_mismatch_is_refused_with_the_file_name(tmp_path, small_rows):
    csv = tmp_path / "rows.csv"
    small_rows.to_csv(csv, index=False)
    config = write_dataset_config(tmp_path, csv, train=[{"path": str(csv), "sha256": "0" * 64}])
    with pytest.raises(DatasetError, match=r"rows\.csv: sha256 is"):
        ingest(load_dataset_config(config), root=tmp_path / "v")


def test_truncated_gzip_is_a_clear_error(tmp_path, small_rows):
    zipped = tmp_path / "rows.csv.gz"
    small_rows.to_csv(zipped, index=False, compression="gzip")
    zipped.write_bytes(zipped.read_bytes()[:5000])
    with pytest.raises(DatasetError, match=r"rows\.csv\.gz: the gzip stream is truncated"):
        ingest(load_dataset_config(write_dataset_config(tmp_path, zipped)), root=tmp_path / "v")


def test_bad_rows_are_profiled_and_never_stored_as_images(tmp_path, small_rows):
    rows = small_rows.copy()
    rows.loc[7, "pixel300"] = 300
    csv = tmp_path / "rows.csv"
    rows.to_csv(csv, index=False)
    version = ingest(load_dataset_config(write_dataset_config(tmp_path, csv)), root=tmp_path / "v").version
    assert not version.images_stored
    profile = version.profile()
    bad = profile[profile["pixel_max"] > 255]
    assert bad[["line", "bad_pixel", "bad_value"]].values.tolist() == [[9, "pixel300", "300"]]
    with pytest.raises(DatasetError, match="no images"):
        version.images()


def _idx(path, array, magic_dtype=0x08):
    header = struct.pack(">BBBB", 0, 0, magic_dtype, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def test_idx_pairs_ingest_with_their_test_split(tmp_path, small_rows):
    images = images_of(small_rows)[:, :, :, 0]
    labels = (small_rows["label"].to_numpy() % 10)
    _idx(tmp_path / "img.gz", images[:400]); _idx(tmp_path / "lab.gz", labels[:400])
    _idx(tmp_path / "timg.gz", images[400:]); _idx(tmp_path / "tlab.gz", labels[400:])
    config = tmp_path / "digits.yaml"
    config.write_text(
        "name: digits\nformat: idx\n"
        f"train: [{{path: {tmp_path}/img.gz, labels_path: {tmp_path}/lab.gz}}]\n"
        f"test: [{{path: {tmp_path}/timg.gz, labels_path: {tmp_path}/tlab.gz}}]\n"
        "image: {height: 28, width: 28}\nclasses: ['0','1','2','3','4','5','6','7','8','9']\n")
    version = ingest(load_dataset_config(config), root=tmp_path / "v").version
    assert version.images().shape == (480, 28, 28, 1)
    assert len(version.indices("test")) == 80
    assert len(version.indices("train")) + len(version.indices("evaluation")) == 400
    np.testing.assert_array_equal(version.images()[:, :, :, 0], images)


def test_idx_shape_mismatch_names_the_file(tmp_path):
    _idx(tmp_path / "img.gz", np.zeros((5, 10, 10))); _idx(tmp_path / "lab.gz", np.zeros(5))
    config = tmp_path / "d.yaml"
    config.write_text(f"name: d\nformat: idx\ntrain: [{{path: {tmp_path}/img.gz, labels_path: {tmp_path}/lab.gz}}]\n"
                      "image: {height: 28, width: 28}\nclasses: [a, b]\n")
    with pytest.raises(DatasetError, match=r"img\.gz: images are \(10, 10\)"):
        ingest(load_dataset_config(config), root=tmp_path / "v")
