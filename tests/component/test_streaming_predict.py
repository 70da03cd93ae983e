"""Streaming batch scoring: a file read, scored and written a batch at a time gives exactly the
outputs of one batch covering it, and a job killed between batches leaves nothing under the
outputs' real names."""

import gzip
import hashlib
import io
import os
import re
import signal
import subprocess
import sys
import time

import pandas as pd
import pyarrow.parquet as pq
import pytest

from keel.core.errors import DatasetError
from keel.core.streams import file_sha256, open_record_batches
from keel.serving.predict import score_files
from keel.tracking import client as tracking
from tests.conftest import REPO

SIGN_MNIST = REPO / "data" / "sign-mnist" / "sign_mnist_train.csv.gz"


@pytest.fixture
def model_name(registered_model):
    return registered_model["registered"].name


@pytest.fixture
def planted(tmp_path, small_rows):
    """40 real rows, ids as written ("000"...), bad rows on both sides of the boundaries of
    batches of 7 (rows 7|8, 14|15, 21|22): a text and an empty pixel in one column, out of
    range, fractional, two problems in one row; a missing and a non-numeric label in later
    batches (true_label becomes float64 there only)."""
    rows = small_rows.head(40).copy().astype(object)
    rows.insert(0, "id", [f"{i:03d}" for i in range(40)])
    for index, column, value in ((6, "pixel5", "abc"), (7, "pixel5", None), (13, "pixel300", 300),
                                 (14, "pixel2", 3.5), (20, "pixel1", -1), (20, "pixel9", "x"),
                                 (21, "pixel784", 256), (29, "label", None), (30, "label", "y")):
        rows.loc[index, column] = value
    path = tmp_path / "in" / "planted.csv"
    path.parent.mkdir()
    rows.to_csv(path, index=False)
    return path


def _score(monkeypatch, batch_rows, *args, **kwargs):
    monkeypatch.setattr("keel.serving.inputs.BATCH_ROWS", batch_rows)
    return score_files(tracking.client(), *args, **kwargs)


def _text(path, scored_at=False):
    """A CSV or JSON-lines output's text (gunzipped), the job's scored_at replaced when asked."""
    text = (gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()).decode()
    return re.sub(r"\d{4}-\d\d-\d\dT[0-9:.]+\+00:00", "T", text) if scored_at else text


# The CPU's convolution kernels may add up a batch of 7 rows in another order than one of 40
# (seen on an AVX2 EPYC: the 8th digit of a probability), so probabilities are compared to 1e-5
# and every other value as written.
_PROBABILITY = re.compile(r"\d\.\d{5,}(?:e-\d+)?")


def _masked(text):
    return _PROBABILITY.sub("P", text)


def _probabilities(text, fmt):
    frame = pd.read_csv(io.StringIO(text)) if fmt == "csv" else pd.read_json(io.StringIO(text), lines=True)
    return frame[[c for c in frame.columns if c == "confidence" or c.endswith("_probability")]]


@pytest.mark.parametrize("name, fmt", [("p.parquet", "parquet"), ("p.csv.gz", "csv"), ("p.jsonl", "jsonl")])
def test_batches_of_seven_give_the_outputs_of_one_batch(tmp_path, monkeypatch, planted, model_name, name, fmt):
    small, whole = tmp_path / "small" / name, tmp_path / "whole" / name
    a = _score(monkeypatch, 7, model_name, planted, small, fmt=fmt)
    b = _score(monkeypatch, 10_000, model_name, planted, whole, fmt=fmt)
    assert (a.rows_scored, a.rows_rejected, a.labelled_rows, a.accuracy) == (b.rows_scored, b.rows_rejected,
                                                                              b.labelled_rows, b.accuracy)
    assert (a.rows_scored, a.rows_rejected, a.labelled_rows) == (34, 6, 32)
    errors = [path.with_name(path.name.replace("p.", "p.errors.", 1)) for path in (small, whole)]
    if fmt == "parquet":
        got, expected = (pd.read_parquet(p).drop(columns="scored_at") for p in (small, whole))
        pd.testing.assert_frame_equal(got, expected)
        assert pq.read_schema(small).remove_metadata() == pq.read_schema(whole).remove_metadata()
        pd.testing.assert_frame_equal(*(pd.read_parquet(p) for p in errors))
        assert got["true_label"].dtype == "float64" and got["id"].iloc[0] == "000"  # as written
        found = pd.read_parquet(errors[0])
        assert found[["row", "id", "column", "reason"]].head(3).values.tolist() == [
            [7, "006", "pixel5", "not a number"], [8, "007", "pixel5", "empty pixel"],
            [14, "013", "pixel300", "out of range (pixels are 0-255)"]]
        assert found.loc[found["row"] == 15, "value"].tolist() == ["3.5"]
    else:
        assert _masked(_text(small, scored_at=True)) == _masked(_text(whole, scored_at=True))
        assert "T" in _text(small, scored_at=True)
        got, expected = (_probabilities(_text(p), fmt) for p in (small, whole))
        pd.testing.assert_frame_equal(got, expected, rtol=1e-5)
        assert _text(errors[0]) == _text(errors[1]) and _text(errors[0]).count("\n") == 7 + (fmt == "csv")
    assert sorted(p.name for p in small.parent.iterdir()) == sorted(p.name for p in whole.parent.iterdir())


def test_a_folder_in_small_batches_equals_its_files_scored_one_by_one(tmp_path, monkeypatch, small_rows, model_name):
    """Files with and without labels: the columns and types of concatenating each file's
    output (a label column that only the second file has comes last, as float64)."""
    folder = tmp_path / "landing"
    folder.mkdir()
    small_rows.iloc[:13].drop(columns="label").to_csv(folder / "a.csv.gz", index=False, compression="gzip")
    small_rows.iloc[13:30].to_parquet(folder / "b.parquet")
    out = tmp_path / "all.parquet"
    summary = _score(monkeypatch, 4, model_name, folder, out)
    singles = [tmp_path / f"{f}.parquet" for f in ("a", "b")]
    for name, single in zip(("a.csv.gz", "b.parquet"), singles):
        _score(monkeypatch, 10_000, model_name, folder / name, single)
    got = pd.read_parquet(out).drop(columns="scored_at")
    expected = pd.concat([pd.read_parquet(p) for p in singles], ignore_index=True).drop(columns="scored_at")
    pd.testing.assert_frame_equal(got, expected)
    assert got.columns[-1] == "true_label" and got["true_label"].isna().sum() == 13 and summary.labelled_rows == 17


def test_record_batches_of_a_gzip_csv_are_typed_per_batch_and_read_it_all(tmp_path):
    header = "id,label,pixel1,pixel2\n"
    rows = [f"{i:03d},{i % 3},{i},{i * 2}\n" for i in range(10)]
    rows[7] = "007,1,abc,\n"
    path = tmp_path / "rows.csv.gz"  # two gzip members (`cat a.gz b.gz`), a byte-order mark, a blank line
    path.write_bytes(gzip.compress(("\ufeff\n" + header + "".join(rows[:5])).encode())
                     + gzip.compress("".join(rows[5:]).encode()))
    digest = hashlib.sha256()
    batches = list(open_record_batches(str(path), 4, text_columns={"id"}, digest=digest))
    assert [b.num_rows for b in batches] == [4, 4, 2] and digest.hexdigest() == file_sha256(str(path))
    assert [str(b.schema.field("pixel1").type) for b in batches] == ["int64", "string", "int64"]
    assert batches[1].column("pixel1").to_pylist() == ["4", "5", "6", "abc"]
    assert batches[1].column("pixel2").to_pylist() == [8, 10, 12, None]  # an empty value: null, still numbers
    assert batches[0].column("id").to_pylist() == ["000", "001", "002", "003"]
    header_only = tmp_path / "header.csv"
    header_only.write_text(header)
    [empty] = open_record_batches(str(header_only), 4)
    assert empty.num_rows == 0 and empty.schema.names == ["id", "label", "pixel1", "pixel2"]
    for content, message in ((b"", "the file is empty"), (b"a,b,a\n1,2,3\n", "repeats column")):
        bad = tmp_path / "bad.csv"
        bad.write_bytes(content)
        with pytest.raises(DatasetError, match=rf"bad\.csv: .*{message}"):
            list(open_record_batches(str(bad), 4, check_header=_refuse_repeats))
    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(gzip.compress((header + "".join(rows) * 2000).encode())[:-20])
    with pytest.raises(DatasetError, match=r"cut\.csv\.gz: the gzip stream is truncated"):
        list(open_record_batches(str(truncated), 1000))


def _refuse_repeats(url, names):
    if len(set(names)) < len(names):
        raise DatasetError(f"{url}: the header repeats column a")


def test_a_job_killed_between_batches_leaves_only_temporaries_the_next_job_removes(tmp_path, model_name,
                                                                                   registered_model, small_rows):
    """The job is SIGKILLed once its first batch is in the outputs' temporaries (it scores the
    27,455 Sign-MNIST rows 500 at a time): nothing under the real names, only temporaries named
    as keel.core.atomic names them, which the next job writing there removes."""
    out = tmp_path / "out" / "preds.parquet"
    script = ("import sys\n"
              "import keel.serving.inputs as inputs\n"
              "from keel.tracking import client as tracking\n"
              "from keel.serving.predict import score_files\n"
              "inputs.BATCH_ROWS = 500\n"
              "score_files(tracking.client(), sys.argv[1], sys.argv[2], sys.argv[3])\n")
    env = {**os.environ, "KEEL_HOME": str(registered_model["home"])}
    job = subprocess.Popen([sys.executable, "-c", script, model_name, str(SIGN_MNIST), str(out)], cwd=REPO, env=env,
                           stderr=subprocess.PIPE)
    pattern = re.compile(r"\.preds\.parquet\.\d+\.[0-9a-f]{8}\.tmp")
    deadline = time.monotonic() + 120
    while job.poll() is None and time.monotonic() < deadline:
        if out.parent.exists() and any(pattern.fullmatch(p.name) for p in out.parent.iterdir()):
            job.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    job.wait()
    assert job.returncode == -signal.SIGKILL, job.stderr.read().decode()[-2000:]
    left = sorted(p.name for p in out.parent.iterdir())
    assert left and all(re.fullmatch(r"\.preds\.(errors\.)?parquet\.\d+\.[0-9a-f]{8}\.tmp", n) for n in left), left
    small = tmp_path / "small.csv"
    small_rows.head(5).to_csv(small, index=False)
    score_files(tracking.client(), model_name, small, out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["preds.errors.parquet", "preds.manifest.json", "preds.parquet"]
