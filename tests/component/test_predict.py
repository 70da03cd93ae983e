"""Batch scoring on small real files with planted bad rows."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from keel.tracking import client as tracking
from keel.core.errors import DatasetError
from keel.serving.predict import score_files
from tests.conftest import REPO


@pytest.fixture
def model_name(registered_model):
    return registered_model["registered"].name


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
    correct = (predictions["predicted_label"] == predictions["true_label"]).mean()
    assert summary.accuracy == pytest.approx(correct) and summary.labelled_rows == 56
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
        "import os, signal, pyarrow.parquet as pq\n"
        "write = pq.ParquetWriter.write_table\n"
        "def dying_write(self, *a, **k):\n"
        "    write(self, *a, **k)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
        "pq.ParquetWriter.write_table = dying_write\n"
        "from keel.tracking import client as tracking\n"
        "from keel.serving.predict import score_files\n"
        f"score_files(tracking.client(), {model_name!r}, {str(batch)!r}, {str(out)!r})\n"
    )
    env = {**os.environ, "KEEL_HOME": str(registered_model["home"])}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    assert not out.exists() and not out.with_name("preds.manifest.json").exists()
    assert not out.with_name("preds.errors.parquet").exists()


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


def test_a_folder_of_photos_is_listed_by_the_rules_of_image_folder_ingest(tmp_path, keel_home):
    """A link out of the folder is not scored but reported, a folder link is one error row (not
    a failed job), an odd but legal name ("...jpg") is scored, hidden junk is skipped."""
    import shutil

    from keel.core.listing import FOLDER_LINK, LINK_OUTSIDE
    from keel.models.networks import build_model
    from keel.serving.pyfunc import CLASSIFIER, log_pyfunc
    from keel.tracking.registry import register
    from tests.image_data import CLASSES, FRUITS

    photos = sorted((FRUITS / "valid" / "freshapples").iterdir())
    folder, outside = tmp_path / "to-score", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    shutil.copy(photos[0], folder / "a.jpg")
    shutil.copy(photos[1], folder / "...jpg")
    shutil.copy(photos[2], outside / "secret.jpg")
    (folder / ".DS_Store").write_bytes(b"Bud1 finder junk")
    (folder / "linked.jpg").symlink_to(outside / "secret.jpg")
    (folder / "album").symlink_to(outside, target_is_directory=True)
    (folder / "same.jpg").symlink_to("a.jpg")  # a link inside the folder is scored like the photo

    # An untrained image model (tiny backbone) registered in this test's own store.
    config = {"architecture": "transfer", "build": {"backbone": "mobilenet_v3_small", "image_size": 32}, "input": "image",
              "image": {"height": 32, "width": 32, "channels": 3}, "labels": list(range(len(CLASSES))),
              "class_names": CLASSES, "label_column": "label", "pixel_columns": [], "inference_precision": "fp32"}
    client = tracking.client()
    run_id = client.create_run(tracking.experiment_id(client, "photos")).info.run_id
    model = build_model("transfer", 3, 32, 32, len(CLASSES), **config["build"])
    uri = log_pyfunc(run_id, CLASSIFIER, model, config, pd.DataFrame({"path": [str(folder / "a.jpg")]}))
    register(client, uri, "photo-model", run_id, {"architecture": "transfer"})

    out = tmp_path / "scores.parquet"
    summary = score_files(client, "photo-model/1", folder, out)
    scores = pd.read_parquet(out)
    assert sorted(scores["id"]) == ["...jpg", "a.jpg", "same.jpg"]
    errors = pd.read_parquet(tmp_path / "scores.errors.parquet").set_index("id")
    assert sorted(errors.index) == ["album", "linked.jpg"]
    assert errors.loc["linked.jpg", "reason"] == LINK_OUTSIDE
    assert errors.loc["album", "reason"].startswith(FOLDER_LINK)
    assert summary.rows_scored == 3 and summary.rows_rejected == 2
    rows = dict(zip(scores["id"], scores["row"])) | dict(zip(errors.index, errors["row"]))
    assert rows == {"...jpg": 1, "a.jpg": 2, "album": 3, "linked.jpg": 4, "same.jpg": 5}  # one numbering, path order
    assert score_files(client, "photo-model/1", folder, out).reused
    (folder / "linked.jpg").unlink()  # a refused entry that goes away changes what was asked: scored again
    assert not score_files(client, "photo-model/1", folder, out).reused


# --------------------------------------------------------------------------- never destroy or mislabel outputs


def test_an_output_that_is_the_input_or_inside_the_input_folder_is_refused(tmp_path, batch, keel_home):
    """Refused before any work (the model named here does not even exist), input untouched."""
    import fsspec

    from keel.core.errors import OutputError

    before = batch.read_bytes()
    for output in (batch, batch.parent / ".." / "in" / "batch.csv"):
        with pytest.raises(OutputError, match=r"batch\.csv: the output is the input file .*choose another --output"):
            score_files(tracking.client(), "no-such-model", batch, output, fmt="csv")
    (tmp_path / "link.csv").symlink_to(batch)
    with pytest.raises(OutputError, match="the output is the input file"):
        score_files(tracking.client(), "no-such-model", tmp_path / "link.csv", batch, fmt="csv")
    for output in (batch.parent / "preds.parquet", batch.parent / "scored" / "preds.parquet"):
        with pytest.raises(OutputError, match=r"lies inside the input folder .*in, which is being scored"):
            score_files(tracking.client(), "no-such-model", batch.parent, output)
    assert batch.read_bytes() == before and sorted(p.name for p in batch.parent.iterdir()) == ["batch.csv"]
    fs = fsspec.filesystem("memory")
    fs.pipe("/keel-landing/a.csv", before)
    with pytest.raises(OutputError, match="the output is the input file"):
        score_files(tracking.client(), "no-such-model", "memory://keel-landing/a.csv", "memory://keel-landing/a.csv", fmt="csv")
    with pytest.raises(OutputError, match="lies inside the input folder"):
        score_files(tracking.client(), "no-such-model", "memory://keel-landing", "memory://keel-landing/out/p.parquet")
    assert fs.cat("/keel-landing/a.csv") == before


def test_an_existing_file_keel_did_not_write_is_never_replaced(tmp_path, batch, model_name):
    """A user's file at --output (or at its errors name) is refused before any work; Keel's own
    earlier output, named by its manifest, is replaced as a daily job expects."""
    from keel.core.errors import OutputError

    out = tmp_path / "out" / "preds.csv"
    out.parent.mkdir()
    out.write_text("the user's own file\n")
    with pytest.raises(OutputError, match=r"preds\.csv: exists and was not written by Keel .*move that file away"):
        score_files(tracking.client(), model_name, batch, out, fmt="csv")
    assert out.read_text() == "the user's own file\n"
    out.unlink()
    errors = out.with_name("preds.errors.csv")
    errors.write_text("mine\n")
    with pytest.raises(OutputError, match=r"preds\.errors\.csv: exists and was not written by Keel"):
        score_files(tracking.client(), model_name, batch, out, fmt="csv")
    assert errors.read_text() == "mine\n"
    errors.unlink()
    score_files(tracking.client(), model_name, batch, out, fmt="csv")
    score_files(tracking.client(), model_name, batch, out, fmt="csv", force=True)  # Keel's own output: replaced
    manifest = out.with_name("preds.manifest.json")
    manifest.write_text("not json")
    with pytest.raises(OutputError, match=r"preds\.manifest\.json: exists and is not a manifest Keel wrote"):
        score_files(tracking.client(), model_name, batch, out, fmt="csv", force=True)
    assert manifest.read_text() == "not json"


def test_an_output_on_a_missing_drive_is_refused_and_no_mount_point_is_made(batch, keel_home):
    from keel.core.errors import OutputError

    for root in ("/mnt", "/"):
        drive = Path(root) / f"keel-unplugged-{os.getpid()}"
        assert not drive.exists()
        with pytest.raises(OutputError, match=rf"{drive}: does not exist, .*is the drive mounted"):
            score_files(tracking.client(), "no-such-model", batch, drive / "daily" / "preds.parquet")
        assert not drive.exists()


def test_a_known_extension_that_contradicts_the_format_is_refused(tmp_path, batch, model_name):
    import gzip

    from keel.core.errors import OutputError

    for name, fmt in (("p.parquet", "csv"), ("p.csv", "parquet"), ("p.jsonl", "csv"), ("p.parquet.gz", "csv"),
                      ("p.csv.gz", "jsonl"), ("p.gz", "parquet")):
        with pytest.raises(OutputError, match=rf"{name.replace('.', '[.]')}: the name ends in \S+ but .*--format"):
            score_files(tracking.client(), model_name, batch, tmp_path / name, fmt=fmt)
        assert not (tmp_path / name).exists()
    score_files(tracking.client(), model_name, batch, tmp_path / "p.csv.gz", fmt="csv")  # .gz: written gzip
    assert (tmp_path / "p.csv.gz").read_bytes()[:2] == b"\x1f\x8b" and len(pd.read_csv(tmp_path / "p.csv.gz")) == 56
    assert gzip.decompress((tmp_path / "p.errors.csv.gz").read_bytes()).count(b"\n") == 5
    score_files(tracking.client(), model_name, batch, tmp_path / "p.scores", fmt="jsonl")  # unknown extension: allowed
    assert len(pd.read_json(tmp_path / "p.scores", lines=True)) == 56


def test_a_header_only_file_gives_an_empty_output_with_the_full_schema(tmp_path, small_rows, model_name):
    import pyarrow.parquet as pq

    small_rows.head(5).to_csv(tmp_path / "five.csv", index=False)
    small_rows.head(0).to_csv(tmp_path / "header.csv", index=False)
    full = score_files(tracking.client(), model_name, tmp_path / "five.csv", tmp_path / "five.parquet")
    empty = score_files(tracking.client(), model_name, tmp_path / "header.csv", tmp_path / "empty.parquet")
    assert full.rows_scored == 5 and empty.rows_scored == 0 and empty.rows_rejected == 0
    expected, got = (pd.read_parquet(tmp_path / f) for f in ("five.parquet", "empty.parquet"))
    assert len(got) == 0 and got.dtypes.to_dict() == expected.dtypes.to_dict()
    assert pq.read_schema(tmp_path / "empty.parquet").remove_metadata() == pq.read_schema(tmp_path / "five.parquet").remove_metadata()
    errors = pq.read_schema(tmp_path / "empty.errors.parquet").remove_metadata()
    assert errors.names == ["input_file", "row", "id", "column", "value", "reason"] and "null" not in map(str, errors.types)
    score_files(tracking.client(), model_name, tmp_path / "header.csv", tmp_path / "empty.csv", fmt="csv")
    assert pd.read_csv(tmp_path / "empty.csv").columns.tolist() == expected.columns.tolist()


def test_an_output_folder_that_cannot_be_written_fails_before_any_work(tmp_path, batch, keel_home):
    """Checked before the model is looked up (it does not exist here) and before any scoring."""
    from keel.core.errors import OutputError
    from tests.filesystems import read_only_folder

    (tmp_path / "a-file").write_text("not a folder")
    with read_only_folder(tmp_path / "ro") as ro:
        for output, folder in ((ro / "p.parquet", ro), (ro / "new" / "p.parquet", ro / "new"),
                               (tmp_path / "a-file" / "x" / "p.parquet", tmp_path / "a-file" / "x")):
            with pytest.raises(OutputError, match=rf"{folder}: .*choose an --output"):
                score_files(tracking.client(), "no-such-model", batch, output)
    (tmp_path / "out.parquet").mkdir()
    with pytest.raises(OutputError, match=r"out\.parquet: is a folder"):
        score_files(tracking.client(), "no-such-model", batch, tmp_path / "out.parquet")


def test_a_full_disk_while_writing_is_an_output_error_naming_the_folder(tmp_path, batch, model_name):
    from keel.core.errors import OutputError
    from tests.filesystems import full_folder

    with full_folder(tmp_path / "full") as full:
        with pytest.raises(OutputError, match=rf"{full}: the disk is full"):
            score_files(tracking.client(), model_name, batch, full / "p.parquet")
        assert sorted(p.name for p in full.iterdir()) == ["filler"]  # no partial or temporary file left


def test_temporaries_of_a_killed_writer_are_removed_by_the_next_write_and_nothing_else(tmp_path):
    """A writer killed (SIGKILL) inside atomic_path leaves its hidden temporary; the next write of
    the same output removes it, and only it: a live writer's, other outputs' and other names stay."""
    import re

    from keel.core.atomic import atomic_path

    out = tmp_path / "preds.parquet"
    writer = ("import os, signal, sys, time\n"
              "from pathlib import Path\n"
              "from keel.core.atomic import atomic_path\n"
              "with atomic_path(Path(sys.argv[1])) as tmp:\n"
              "    tmp.write_bytes(b'PAR1 half a file')\n"
              "    print(tmp.name, flush=True)\n"
              "    os.kill(os.getpid(), signal.SIGKILL) if sys.argv[2] == 'die' else time.sleep(60)\n")
    killed = subprocess.run([sys.executable, "-c", writer, str(out), "die"], cwd=REPO, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    dead = tmp_path / killed.stdout.strip()
    assert re.fullmatch(r"\.preds\.parquet\.\d+\.[0-9a-f]{8}\.tmp", dead.name) and dead.exists()
    live = subprocess.Popen([sys.executable, "-c", writer, str(out), "live"], cwd=REPO, stdout=subprocess.PIPE, text=True)
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        alive = tmp_path / live.stdout.readline().strip()
        gone = subprocess.Popen(["true"])
        gone.wait()  # its pid is no live process now
        others = [f".preds.parquet.{gone.pid}.0badf00d.tmp.keep",  # not Keel's exact name
                  f".preds.parquet.{gone.pid}.tmp",                  # no random part
                  f".other.parquet.{gone.pid}.0badf00d.tmp",         # another output's
                  f"preds.parquet.{gone.pid}.0badf00d.tmp",          # not hidden
                  f".preds.parquet.{sleeper.pid}.0badf00d.tmp",      # a live process's
                  ".preds.parquet.backup"]
        for name in others:
            (tmp_path / name).write_text("someone's")
        simulated = tmp_path / f".preds.parquet.{gone.pid}.0badf00d.tmp"  # a dead pid, no lock
        simulated.write_text("abandoned")
        with atomic_path(out) as mine:
            with atomic_path(out) as nested:  # the same process's write in flight is kept
                nested.write_text("b")
            assert mine.exists()
            mine.write_text("a")
        assert out.read_text() == "a"
        assert not dead.exists() and not simulated.exists()
        assert alive.exists() and all((tmp_path / name).read_text() == "someone's" for name in others)
    finally:
        live.kill()
        sleeper.kill()
        live.wait()
        sleeper.wait()


def test_a_dataset_with_another_pixel_prefix_scores_its_own_rows(tmp_path, small_rows, keel_home):
    """The served model takes the dataset's own pixel columns: a dataset whose config says
    `pixel_prefix: px` (columns px1..px784) trains, registers, and scores its own rows."""
    from keel.core.config import TrainConfig
    from keel.stages.ingest import ingest_stage
    from keel.stages.registration import register_stage
    from keel.stages.runs import start_run_stage
    from keel.stages.training import train_stage
    from tests.conftest import write_dataset_config

    rows = small_rows.rename(columns=lambda c: c.replace("pixel", "px"))
    csv = tmp_path / "px.csv"
    rows.to_csv(csv, index=False)
    config = str(write_dataset_config(tmp_path, csv, name="px-small", pixel_prefix="px"))
    version = ingest_stage(config)
    train = TrainConfig(epochs=1, batch_size=64)
    run = start_run_stage(config, version, train)
    registered = register_stage(run, version, train_stage(run, version, train, progress=False), {})

    summary = score_files(tracking.client(), f"{registered.name}/{registered.version}", csv, tmp_path / "scored.parquet")
    assert (summary.rows_scored, summary.rows_rejected, summary.labelled_rows) == (len(rows), 0, len(rows))
    assert pd.read_parquet(tmp_path / "scored.parquet")["row"].tolist() == list(range(1, len(rows) + 1))


def test_the_command_answers_a_rerun_from_the_manifest_without_prefect_or_torch(tmp_path, batch, model_name,
                                                                                 registered_model):
    """`keel predict` with nothing to do reads the manifest, pins the version in the registry and
    hashes the inputs, and stops there: no Prefect API, no flow run, no torch. Once the inputs
    differ from what the manifest records, the job runs through the flow again."""
    out = tmp_path / "preds.parquet"
    score_files(tracking.client(), model_name, batch, out)
    script = ("import sys\nfrom cli.main import main\n"
              "code = main(sys.argv[1:])\n"
              "print('loaded:', 'prefect' in sys.modules, 'torch' in sys.modules)\nsys.exit(code)\n")
    env = {**os.environ, "KEEL_HOME": str(registered_model["home"])}
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-c", script, "predict", "--model", model_name, "--input", str(batch), "--output", str(out)]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr[-2000:]  # the 4 planted rows: rejected, as the first job said
    assert "reused existing output" in done.stdout and "loaded: False False" in done.stdout
    pd.read_csv(batch).head(30).to_csv(batch, index=False)  # new content: the manifest no longer matches
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    assert done.returncode == 1, done.stderr[-2000:]
    assert "26 rows scored, 4 rejected" in done.stdout and "loaded: True True" in done.stdout
    assert json.loads(out.with_name("preds.manifest.json").read_text())["summary"]["rows_scored"] == 26
