import gzip
import struct

import numpy as np
import pytest

from keel.core.config import load_dataset_config
from keel.data.versions import class_indices
from keel.modalities import ingest
from keel.core.errors import DatasetError
from keel.data.splits import stratified_split
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


# --------------------------------------------------------------------------- bad input files: one sentence, never a traceback


def _bom_csv(path, rows):
    """`rows` as Excel's "CSV UTF-8" writes them: a byte-order mark before the header."""
    path.write_bytes(b"\xef\xbb\xbf" + rows.to_csv(index=False).encode())
    return path


def test_a_byte_order_mark_is_accepted_by_every_csv_reader(tmp_path, small_rows):
    from keel.validation.incoming import read_batch
    from keel.serving.inputs import read_table

    plain, bom = tmp_path / "plain.csv", _bom_csv(tmp_path / "bom.csv", small_rows)
    small_rows.to_csv(plain, index=False)
    expected = ingest(load_dataset_config(write_dataset_config(tmp_path, plain, name="a")), root=tmp_path / "v").version
    config = load_dataset_config(write_dataset_config(tmp_path, bom, name="b"))
    version = ingest(config, root=tmp_path / "v").version  # keel train
    assert version.meta["header"][0] == "label"
    np.testing.assert_array_equal(version.images(), expected.images())
    np.testing.assert_array_equal(version.labels(), expected.labels())
    parsed, _, fmt = read_batch(config, str(bom), None, "id")  # keel validate
    assert fmt == "csv" and parsed.header[0] == "label"
    np.testing.assert_array_equal(np.asarray(parsed.pixels), small_rows.drop(columns="label").to_numpy())
    assert read_table(str(bom), bom.read_bytes()).column_names[0] == "label"  # keel predict


def test_a_quoted_header_is_read_like_a_plain_one(tmp_path, small_rows):
    """Spreadsheet exports quote every name ("label","pixel1",...): legal CSV, the same data."""
    plain, quoted = tmp_path / "plain.csv", tmp_path / "quoted.csv"
    small_rows.to_csv(plain, index=False)
    lines = plain.read_text().splitlines()
    quoted.write_text("\n".join([",".join(f'"{name}"' for name in lines[0].split(",")), *lines[1:]]) + "\n")
    expected = ingest(load_dataset_config(write_dataset_config(tmp_path, plain, name="a")), root=tmp_path / "v").version
    version = ingest(load_dataset_config(write_dataset_config(tmp_path, quoted, name="b")), root=tmp_path / "v").version
    assert version.meta["header"][:2] == ["label", "pixel1"]
    np.testing.assert_array_equal(version.images(), expected.images())
    np.testing.assert_array_equal(version.labels(), expected.labels())


@pytest.mark.parametrize("column", ["pixel5", "label"])
def test_a_repeated_header_column_names_the_file_and_the_column(tmp_path, small_rows, column):
    from keel.validation.incoming import read_batch
    from keel.serving.inputs import read_table

    text = small_rows.to_csv(index=False).splitlines()
    header = text[0].split(",")
    header[header.index(column) + 1] = column  # pixel6 (or pixel1) renamed to a second pixel5 (label)
    csv = tmp_path / "dup.csv"
    csv.write_text("\n".join([",".join(header), *text[1:]]) + "\n")
    config = load_dataset_config(write_dataset_config(tmp_path, csv))
    message = rf"dup\.csv: the header repeats column '{column}' \(columns \d+ and \d+\); rename or remove"
    with pytest.raises(DatasetError, match=message):
        ingest(config, root=tmp_path / "v")
    with pytest.raises(DatasetError, match=message):
        read_batch(config, str(csv), None, "id")
    with pytest.raises(DatasetError, match=message):
        read_table(str(csv), csv.read_bytes())


@pytest.mark.parametrize("data, reason", [
    pytest.param(b"\0\0\x08\xff" + b"\0" * 40, r"says 255 dimensions \(IDX files have 1 to 4\)", id="255-dims"),
    pytest.param(b"\0\0\x08\x00", r"says 0 dimensions", id="0-dims"),
    pytest.param(b"\0\0\x08\x05" + b"\0" * 24, r"says 5 dimensions", id="5-dims"),
    pytest.param(b"\0\0\x08\x03\0\0\0\x02", r"header is cut short: 3 dimensions need 16 header bytes, the file has 8",
                 id="short-header"),
    pytest.param(b"\0\0\x08\x01\0\0\0\x09" + b"a",
                 r"header says shape \(9,\) \(9 values\) but the file holds 1; the file is truncated", id="truncated"),
    pytest.param(b"\0\0\x08\x01\0\0\0\x01" + b"ab", r"holds 1 byte more than the 1 values of the shape \(1,\) its IDX header says", id="extra-bytes"),
    pytest.param(b"\0\0\x0d\x01\0\0\0\x01" + b"aaaa", r"element type 0x0d is not supported", id="float-type"),
    pytest.param(b"\0\0\x42\x01\0\0\0\x01" + b"a", r"element type 0x42 is not an IDX type", id="unknown-type"),
])
def test_an_impossible_idx_header_names_the_file_and_the_problem(data, reason):
    from keel.data.idx import parse_idx_array

    with pytest.raises(DatasetError, match=r"^f\.idx: .*" + reason):
        parse_idx_array("f.idx", data)


def test_an_impossible_idx_header_stops_ingest_with_the_file_name(tmp_path):
    (tmp_path / "img").write_bytes(b"\0\0\x08\xff" + b"\0" * 40)
    _idx(tmp_path / "lab.gz", np.zeros(5))
    config = tmp_path / "d.yaml"
    config.write_text(f"name: d\nformat: idx\ntrain: [{{path: {tmp_path}/img, labels_path: {tmp_path}/lab.gz}}]\n"
                      "image: {height: 28, width: 28}\nclasses: [a, b]\n")
    with pytest.raises(DatasetError, match=r"img: the IDX header says 255 dimensions"):
        ingest(load_dataset_config(config), root=tmp_path / "v")


def test_a_refused_connection_says_so_and_is_not_retried(tmp_path):
    import socket

    from keel.core.io import read_bytes
    from tasks import retry_unless_user_error

    with socket.socket() as probe:  # a port that nothing listens on: bound, then closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DatasetError) as caught:
        read_bytes(f"http://reader:s3cr3t-pw@127.0.0.1:{port}/rows.csv")
    message = str(caught.value)
    assert f"connection refused by 127.0.0.1:{port}" in message
    assert "file not found" not in message and "s3cr3t-pw" not in message
    assert "is the server up" in message

    class State:  # what Prefect's retry condition sees: the task's failed state
        def result(self):
            raise caught.value

    assert retry_unless_user_error(None, None, State()) is False


def test_a_host_name_that_does_not_resolve_says_so():
    from keel.core.io import read_bytes

    with pytest.raises(DatasetError, match=r"nosuch\.invalid/rows\.csv: the host name nosuch\.invalid cannot be resolved"):
        read_bytes("http://nosuch.invalid/rows.csv")  # .invalid never resolves (RFC 6761)


def _ragged_after_a_quoted_comma(path, rows, text_column):
    """`rows` as CSV with `text_column` first: row 1's value holds a quoted comma ("a,b") and
    row 3 (file line 4) lost its last field."""
    lines = rows.to_csv(index=False).splitlines()
    lines[1] = '"a,b"' + lines[1][lines[1].index(","):]
    lines[3] = lines[3].rsplit(",", 1)[0]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_ragged_line_is_named_by_its_line_even_after_a_quoted_comma(tmp_path, small_rows):
    rows = small_rows.head(60).copy()
    rows.insert(0, "signer", [f"s{i % 5}" for i in range(len(rows))])
    csv = _ragged_after_a_quoted_comma(tmp_path / "rows.csv", rows, "signer")
    config = load_dataset_config(write_dataset_config(tmp_path, csv, group_column="signer"))
    with pytest.raises(DatasetError, match=r"rows\.csv: line 4 has 785 fields but the header has 786 \(1 such lines\)"):
        ingest(config, root=tmp_path / "v")


def test_skipped_and_kept_rows_keep_their_file_lines_after_a_quoted_comma(tmp_path, small_rows):
    from keel.validation.incoming import read_batch

    rows = small_rows.head(60).copy()
    rows.insert(0, "id", [f"r{i}" for i in range(len(rows))])
    csv = _ragged_after_a_quoted_comma(tmp_path / "batch.csv", rows, "id")
    parsed, _, _ = read_batch(load_dataset_config(write_dataset_config(tmp_path, csv)), str(csv), None, "id")
    assert [(item["line"], item["fields"]) for item in parsed.skipped] == [(4, 785)]
    assert parsed.profile["line"].tolist()[:4] == [2, 3, 5, 6]
    assert parsed.profile["id"].tolist()[:3] == ["a,b", "r1", "r3"]
