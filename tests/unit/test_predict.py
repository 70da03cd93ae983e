"""Batch scoring on small real files with planted bad rows."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from keel import tracking
from keel.errors import DatasetError
from keel.predict import score_files
from tests.conftest import REPO


@pytest.fixture
def model_name(registered_model):
    return registered_model["registered"]["name"]


@pytest.fixture
def batch(tmp_path, small_rows):
    """60 real rows with an id column and four planted bad rows."""
    rows = small_rows.head(60).copy()
    rows.insert(0, "id", [f"img-{i:03d}" for i in range(60)])
    rows = rows.astype(object)
    rows.loc[3, "pixel300"] = 300
    rows.loc[7, "pixel5"] = "abc"
    rows.loc[11, "pixel9"] = None
    rows.loc[20, "pixel1"] = -1
    path = tmp_path / "in" / "batch.csv"
    path.parent.mkdir()
    rows.to_csv(path, index=False)
    return path


def test_good_rows_scored_bad_rows_in_the_errors_file(tmp_path, batch, model_name):
    out = tmp_path / "out" / "preds.parquet"
    summary = score_files(tracking.client(), model_name, batch, out)
    assert summary.rows_scored == 56 and summary.rows_rejected == 4 and not summary.reused
    predictions = pd.read_parquet(out)
    assert len(predictions) == 56 and predictions["id"].is_unique
    assert not predictions["id"].isin(["img-003", "img-007", "img-011", "img-020"]).any()
    expected = {"id", "row", "predicted_label", "class_name", "confidence", "top1_class", "top1_probability",
                "top2_class", "top3_probability", "true_label", "model_name", "model_version", "model_run_id",
                "input_file", "input_sha256", "scored_at"}
    assert expected <= set(predictions.columns)
    assert (predictions["top1_class"] == predictions["class_name"]).all()
    assert (predictions["top1_probability"] >= predictions["top2_probability"]).all()
    errors = pd.read_parquet(out.with_name("preds.errors.parquet"))
    got = {(r.row, r.id, r.column, r.reason) for r in errors.itertuples()}
    assert got == {
        (4, "img-003", "pixel300", "out of range (pixels are 0-255)"),
        (8, "img-007", "pixel5", "not a number"),
        (12, "img-011", "pixel9", "empty pixel"),
        (21, "img-020", "pixel1", "out of range (pixels are 0-255)"),
    }
    assert summary.accuracy is not None and summary.labelled_rows == 56
    assert sorted(p.name for p in out.parent.iterdir()) == ["preds.errors.parquet", "preds.manifest.json", "preds.parquet"]


def test_rerun_returns_the_existing_output_and_force_recomputes(tmp_path, batch, model_name):
    out = tmp_path / "preds.parquet"
    first = score_files(tracking.client(), model_name, batch, out)
    stamp = out.stat().st_mtime_ns
    again = score_files(tracking.client(), f"{model_name}@champion", batch, out)
    assert again.reused and out.stat().st_mtime_ns == stamp and again.rows_scored == first.rows_scored
    forced = score_files(tracking.client(), model_name, batch, out, force=True)
    assert not forced.reused and out.stat().st_mtime_ns != stamp


def test_folder_of_parquet_and_csv_files_and_other_formats(tmp_path, small_rows, model_name):
    folder = tmp_path / "landing"
    folder.mkdir()
    small_rows.head(10).to_parquet(folder / "a.parquet")
    small_rows.iloc[10:25].drop(columns="label").to_csv(folder / "b.csv.gz", index=False, compression="gzip")
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"preds.{fmt}"
        summary = score_files(tracking.client(), f"{model_name}/1", folder, out, fmt=fmt)
        assert summary.rows_scored == 25 and len(summary.files) == 2
        frame = pd.read_csv(out) if fmt == "csv" else pd.read_json(out, lines=True)
        assert len(frame) == 25 and frame["input_file"].nunique() == 2
    assert summary.labelled_rows == 10  # only a.parquet has labels


def test_unreadable_files_fail_naming_the_file(tmp_path, small_rows, model_name):
    broken = tmp_path / "broken.csv.gz"
    small_rows.head(50).to_csv(broken, index=False, compression="gzip")
    broken.write_bytes(broken.read_bytes()[:3000])
    with pytest.raises(DatasetError, match=r"broken\.csv\.gz: the gzip stream is truncated"):
        score_files(tracking.client(), model_name, broken, tmp_path / "p.parquet")
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DatasetError, match=r"junk\.parquet: not a readable parquet file"):
        score_files(tracking.client(), model_name, junk, tmp_path / "p.parquet")
    assert not (tmp_path / "p.parquet").exists()


def test_a_job_killed_while_writing_leaves_no_output(tmp_path, batch, model_name, registered_model):
    out = tmp_path / "preds.parquet"
    script = (
        "import os, signal, pandas as pd\n"
        "def dying_write(self, path, *a, **k):\n"
        "    open(path, 'wb').write(b'PAR1 half a file')\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "pd.DataFrame.to_parquet = dying_write\n"
        "from keel import tracking\n"
        "from keel.predict import score_files\n"
        f"score_files(tracking.client(), {model_name!r}, {str(batch)!r}, {str(out)!r})\n"
    )
    env = {**os.environ, "KEEL_HOME": str(registered_model["home"])}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert not out.exists() and not out.with_name("preds.manifest.json").exists()


def test_mlflow_models_predict_scores_a_keel_model(tmp_path, small_rows, model_name, registered_model):
    rows = tmp_path / "rows.csv"
    small_rows.head(5).to_csv(rows, index=False)
    out = tmp_path / "out.json"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking.tracking_uri()}
    mlflow = os.path.join(os.path.dirname(sys.executable), "mlflow")
    done = subprocess.run([mlflow, "models", "predict", "-m", f"models:/{model_name}@champion", "-i", str(rows),
                           "-t", "csv", "--env-manager", "local", "-o", str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = json.loads(out.read_text())["predictions"]
    assert len(predictions) == 5 and {"label", "class_name", "confidence"} <= set(predictions[0])


def test_two_jobs_writing_the_same_output_never_interleave(tmp_path, batch, small_rows, model_name):
    import threading

    other = tmp_path / "other.csv"
    small_rows.head(30).to_csv(other, index=False)
    out = tmp_path / "shared" / "preds.parquet"
    start = threading.Barrier(2)
    results = {}

    def job(source):
        start.wait()
        results[source] = score_files(tracking.client(), model_name, source, out, force=True)

    threads = [threading.Thread(target=job, args=(s,)) for s in (batch, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    written = pd.read_parquet(out)  # a whole file from one of the two jobs, never a mix
    assert written["input_file"].nunique() == 1
    manifest = json.loads(out.with_name("preds.manifest.json").read_text())
    assert manifest["inputs"][0]["file"] == written["input_file"][0]  # output and manifest of one job
    assert len(written) == results[Path(written["input_file"][0])].rows_scored
    assert sorted(p.name for p in out.parent.iterdir()) == ["preds.errors.parquet", "preds.manifest.json", "preds.parquet"]


def test_fsspec_urls_in_and_out_with_a_dated_output(batch, model_name):
    """Team workers may not share a disk: inputs and outputs can be fsspec URLs (here fsspec's
    in-memory filesystem), and `{date}` in the output names one file per scoring day."""
    import datetime as dt

    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/landing/a.csv", batch.read_bytes())
    fs.pipe("/landing/.partial.csv", b"not yet")  # hidden files are skipped
    out = "memory://predictions/{date}/preds.parquet"
    summary = score_files(tracking.client(), model_name, "memory://landing", out)
    day = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    assert summary.output == f"memory://predictions/{day}/preds.parquet"
    assert summary.rows_scored == 56 and summary.rows_rejected == 4
    with fs.open(f"/predictions/{day}/preds.parquet", "rb") as handle:
        assert len(pd.read_parquet(handle)) == 56
    assert fs.exists(f"/predictions/{day}/preds.errors.parquet") and fs.exists(f"/predictions/{day}/preds.manifest.json")
    assert not [p for p in fs.find("/predictions") if p.endswith(".tmp")]  # no temporary file left behind
    assert score_files(tracking.client(), model_name, "memory://landing", out).reused
