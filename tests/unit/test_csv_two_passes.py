"""keel.core.streams reads a CSV of integers once, as integers, and falls back to text from the
start at the first value that is not one: the batches are those of a text read, the digest is
the file's, and a file that changes between the two passes is caught."""

import gzip
import hashlib

import numpy as np
import pyarrow as pa
import pytest

from keel.core import streams
from keel.core.streams import file_sha256, open_record_batches

ROWS, PIXELS = 3000, 784  # about 5 MB of text: Arrow's 1 MiB blocks, so batches come before the bad row


def _pixel_csv(path, bad_row=None):
    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, size=(ROWS, PIXELS))
    lines = ["id,label," + ",".join(f"pixel{i + 1}" for i in range(PIXELS))]
    lines += [f"{i:05d},{i % 24}," + ",".join(map(str, row)) for i, row in enumerate(values)]
    if bad_row is not None:
        cells = lines[bad_row + 1].split(",")
        cells[5] = "abc"
        lines[bad_row + 1] = ",".join(cells)
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode(), compresslevel=1))
    return values


def _read(path, batch_rows=500):
    digest = hashlib.sha256()
    batches = list(open_record_batches(str(path), batch_rows, text_columns={"id"}, digest=digest))
    return batches, digest.hexdigest()


def test_a_clean_file_is_read_once_as_integers(tmp_path, monkeypatch):
    path = tmp_path / "clean.csv.gz"
    values = _pixel_csv(path)
    monkeypatch.setattr(streams._CsvSource, "restart", lambda self: pytest.fail("a clean file was read twice"))
    batches, digest = _read(path)
    assert [b.num_rows for b in batches] == [500] * 6 and digest == file_sha256(str(path))
    assert {str(f.type) for b in batches for f in b.schema if f.name != "id"} == {"int64"}
    pixels = np.vstack([np.column_stack([b.column(f"pixel{i + 1}").to_numpy() for i in range(PIXELS)])
                        for b in batches])
    assert (pixels == values).all() and batches[0].column("id").to_pylist()[:2] == ["00000", "00001"]


def test_a_bad_value_late_in_the_file_reads_it_again_as_text_from_there(tmp_path, monkeypatch):
    path = tmp_path / "late.csv.gz"
    values = _pixel_csv(path, bad_row=2600)
    restarts = []
    original = streams._CsvSource.restart
    monkeypatch.setattr(streams._CsvSource, "restart", lambda self: (restarts.append(1), original(self)))
    batches, digest = _read(path)
    assert restarts == [1] and digest == file_sha256(str(path))
    assert [b.num_rows for b in batches] == [500] * 6
    # The batches before the bad one as integers; the bad one's column as text there only.
    assert [str(b.schema.field("pixel4").type) for b in batches] == ["int64"] * 5 + ["string"]
    assert batches[5].column("pixel4").to_pylist()[100] == "abc"
    assert batches[5].column("pixel4").to_pylist()[99] == str(values[2599, 3])
    assert [str(b.schema.field("pixel5").type) for b in batches] == ["int64"] * 6
    assert np.array_equal(np.concatenate([b.column("pixel5").to_numpy() for b in batches]), values[:, 4])


def test_a_file_changed_between_the_two_passes_does_not_match_its_hash(tmp_path, monkeypatch):
    """Only bytes the first pass read (and hashed) change, in place: hashed once, the new bytes
    past them would give the old file's hash."""
    gz = tmp_path / "changed.csv.gz"
    _pixel_csv(gz, bad_row=2600)
    path = tmp_path / "changed.csv"
    path.write_bytes(gzip.decompress(gz.read_bytes()))
    before = file_sha256(str(path))
    original = streams._CsvSource.restart

    def changed_then_restart(self):  # another writer edits the first row between the passes
        data = bytearray(path.read_bytes())
        at = data.index(b"\n00000,0,") + 9  # pixel1 of the first row
        data[at:at + 1] = b"9" if data[at:at + 1] != b"9" else b"8"
        path.write_bytes(bytes(data))
        original(self)

    monkeypatch.setattr(streams._CsvSource, "restart", changed_then_restart)
    _, digest = _read(path)
    assert file_sha256(str(path)) != before and digest not in (before, file_sha256(str(path)))


def test_an_empty_table_is_typed_as_integers(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("id,label,pixel1\n")
    [batch] = open_record_batches(str(path), 10, text_columns={"id"})
    assert batch.num_rows == 0 and batch.schema == pa.schema([("id", pa.string()), ("label", pa.int64()),
                                                               ("pixel1", pa.int64())])
