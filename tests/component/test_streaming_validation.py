"""Validation in chunks of rows (keel.data.pixel_stream): a file read a few rows at a time gives
the same verdict, the same quarantine, the same rows set aside and the same clean rows as the
file read in one chunk, also when its bad rows, unreadable lines and odd types fall across
chunk boundaries; the first pass's profile is the whole-file parser's, row for row."""

import gzip
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from keel.core.config import load_dataset_config
from keel.core.errors import DatasetError
from keel.data.pixel_stream import CsvRows
from keel.models.anomaly import StreamingErrors, reconstruction_errors
from keel.validation.incoming import first_pass, pixel_rows, read_batch, validate_batch
from keel.validation.report_files import PixelSpill
from keel.validation.suite import load_suite
from tests.incoming_data import PLANTED_ROWS, REPO, clean_batch

CONFIG = REPO / "conf" / "datasets" / "sign-mnist.yaml"
WHOLE = 1_000_000  # one chunk holds the whole file


@pytest.fixture(scope="module")
def config():
    return load_dataset_config(CONFIG)


def _planted(folder):
    """The clean batch with ids and faults on both sides of the boundaries of chunks of 60 lines
    (the first chunk holds lines 1-61, the next 62-121, ...): text, empty, fractional and
    out-of-range pixels, unknown and missing labels, ids that repeat across chunks or read as
    text in one chunk only, inverted images, a ragged line ending a chunk, empty lines across
    a boundary."""
    frame = clean_batch().astype(object)
    frame.insert(0, "id", [f"{i:05d}" for i in range(len(frame))])
    pixels = [c for c in frame.columns if c.startswith("pixel")]
    frame.loc[3, "pixel5"] = "abc"
    frame.loc[59, "pixel7"] = None  # the last line of the first chunk
    frame.loc[60, "pixel8"] = 2.5  # the first of the second
    frame.loc[100, ["pixel300", "pixel301"]] = [300, 301]
    frame.loc[101, "pixel1"] = -1
    frame.loc[200, "label"] = 9
    frame.loc[201, "label"] = None
    frame.loc[300, "id"] = "x-300"
    frame.loc[333, "id"] = "00012"  # the same id as row 12, chunks apart
    frame.loc[PLANTED_ROWS, pixels] = 255 - frame.loc[PLANTED_ROWS, pixels].to_numpy(dtype=np.int64)
    lines = frame.to_csv(index=False).splitlines()
    lines[120] = lines[120].rsplit(",", 1)[0]  # ragged (one field short), line 121: the second chunk's last
    lines[180:180] = ["", ""]  # lines 181 and 182
    path = folder / "planted.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    return path


def _outputs(report):
    """What a report says, but for timings and where it was written."""
    result = json.loads((report / "report.json").read_text())
    for key in ("seconds", "report_dir", "files"):
        result.pop(key)
    clean = pq.read_table(report / "clean.parquet") if (report / "clean.parquet").exists() else None
    return (result, (report / "quarantine.csv").read_text(), (report / "quarantined_rows.csv").read_text(),
            clean, sorted(p.name for p in report.iterdir()))


@pytest.mark.parametrize("name, batch_rows", [("csv", 60), ("parquet", 50)])
def test_chunks_give_the_reports_of_one_chunk(tmp_path, config, name, batch_rows):
    path = _planted(tmp_path)
    ids = [f"{i:05d}" for i in PLANTED_ROWS]
    if name == "parquet":  # integer pixels, missing in two batches only; out of range; repeated ids; inverted images
        frame = clean_batch().copy()
        pixels = [c for c in frame.columns if c.startswith("pixel")]
        frame.loc[PLANTED_ROWS, pixels] = 255 - frame.loc[PLANTED_ROWS, pixels]
        frame.insert(0, "id", [f"r{i}" for i in range(len(frame))])
        frame["pixel4"] = frame["pixel4"].astype("Int64")
        frame.loc[[7, 120], "pixel4"] = pd.NA
        frame.loc[260, "pixel5"] = 300
        frame.loc[410, "id"] = "r7"
        path, ids = tmp_path / "planted.parquet", [f"r{i}" for i in PLANTED_ROWS]
        frame.to_parquet(path)
    whole = validate_batch(config, str(path), tmp_path / "whole", batch_rows=WHOLE)
    chunked = validate_batch(config, str(path), tmp_path / "chunked", batch_rows=batch_rows)
    assert whole.verdict == chunked.verdict == "accepted with quarantine", whole.summary()
    (result, quarantine, rows, clean, names), again = _outputs(tmp_path / "whole"), _outputs(tmp_path / "chunked")
    assert result == again[0] and quarantine == again[1] and rows == again[2] and names == again[4]
    assert clean.equals(again[3]) and clean.num_rows == whole.clean_rows == chunked.clean_rows
    assert ".pixels.arrow" not in names  # the spill never reaches the report
    reasons = pd.read_csv(tmp_path / "chunked" / "quarantine.csv", keep_default_na=False, dtype={"id": str})
    assert set(ids) <= set(reasons[reasons["column"] == "anomaly_score"]["id"])  # every inverted image
    if name == "csv":
        assert reasons[reasons["value"] == "abc"][["row", "line", "id", "column"]].values.tolist() == [["4", 5, "00003", "pixel5"]]
        assert result["unparsed_lines"] == [{"line": 121, "fields": 785, "expected": 786}]
        label = reasons[(reasons["column"] == "label") & (reasons["value"] == "9")]  # after the ragged and the empty lines
        assert label[["row", "line", "id"]].values.tolist() == [["200", 204, "00200"]]
        assert sorted(reasons[reasons["column"] == "id"]["id"]) == ["00012", "00012"]


def test_the_first_pass_profiles_every_row_as_the_whole_file_parser_does(tmp_path, config):
    path = _planted(tmp_path)
    suite = load_suite(config)
    parsed, _, _ = read_batch(config, str(path), None, "id")
    expected = parsed.profile.copy()
    expected["label"] = [None if v is None or v != v else str(v) for v in expected["label"]]
    batch = first_pass(config, pixel_rows(config, str(path), None, "id", batch_rows=60), suite, "id",
                       PixelSpill(tmp_path / "spill"))
    assert batch.reading.forced and batch.reading.float_pixels  # its chunks disagreed: read again as a whole
    pd.testing.assert_frame_equal(batch.profile, expected)
    assert batch.header == parsed.header and batch.kinds == parsed.kinds
    assert [{k: v for k, v in item.items() if k != "text"} for item in batch.skipped] == \
        [{k: v for k, v in item.items() if k != "text"} for item in parsed.skipped]
    with np.errstate(invalid="ignore"):  # the rows with a missing pixel: as clean.parquet would cast them
        expected_pixels = np.asarray(parsed.pixels).astype(np.uint8)
    assert np.array_equal(np.concatenate(list(PixelSpill(tmp_path / "spill").rows())), expected_pixels)


def test_anomaly_scores_do_not_depend_on_the_chunks(config):
    from keel.models.anomaly import load_autoencoder

    suite = load_suite(config)
    model = load_autoencoder(suite.anomaly_weights(), suite.anomaly.get("sha256"))
    pixels = np.tile(clean_batch().drop(columns="label").to_numpy(np.int32), (3, 1))
    scorer = StreamingErrors(model, batch_size=256)
    for start, end in ((0, 100), (100, 101), (101, 700), (700, len(pixels))):
        scorer.add(pixels[start:end])
    assert np.array_equal(scorer.finish(), reconstruction_errors(model, pixels, batch_size=256))


def test_a_file_that_changes_between_the_passes_is_refused(tmp_path, config):
    path = tmp_path / "batch.csv"
    clean_batch().to_csv(path, index=False)
    rows = CsvRows(str(path), config, "id", batch_rows=100)
    assert sum(1 for _ in rows.chunks()) == 5 and sum(rows.chunk_rows) == 480
    clean_batch().iloc[::-1].to_csv(path, index=False)
    with pytest.raises(DatasetError, match="batch.csv: the file changed while it was being validated"):
        list(rows.chunks(wanted=lambda index: index == 3, last=3))
