"""`keel predict --workers N` / `--dask-address ADDRESS`: one part per input file on a real Dask
cluster (LocalCluster, 2 worker processes), a job manifest that matches the files, a re-run that
touches nothing, and a corrupt file that fails its part alone."""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
from pathlib import Path

import pandas as pd
import pytest

from cli.main import main
from tests.console import console


def keel(*argv: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of the `keel` command."""
    with console() as (out, err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def dask_cluster(registered_model):
    """Two worker processes, one thread each, shared by this module's --dask-address runs. Started
    once registered_model set KEEL_HOME: the workers inherit the environment, so they reach its store."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:
        yield cluster


def landing_folder(folder: Path, rows: pd.DataFrame) -> dict[str, int]:
    """Four small input files of three kinds, one holding a bad pixel; file name -> its good rows."""
    folder.mkdir()
    bad = rows.iloc[30:35].copy().astype(object)
    bad.iloc[2, bad.columns.get_loc("pixel10")] = 999
    rows.iloc[:10].to_csv(folder / "a.csv", index=False)
    rows.iloc[10:18].to_csv(folder / "b.csv.gz", index=False, compression="gzip")
    rows.iloc[18:24].to_parquet(folder / "c.parquet", index=False)
    bad.to_csv(folder / "d.csv", index=False)
    return {"a.csv": 10, "b.csv.gz": 8, "c.parquet": 6, "d.csv": 4}


def test_four_files_on_two_workers_give_four_parts_a_manifest_and_a_rerun_that_touches_nothing(
        tmp_path, small_rows, registered_model, dask_cluster):
    from distributed import Client

    name = registered_model["registered"].name
    good = landing_folder(tmp_path / "landing", small_rows)
    out = tmp_path / "scored"
    args = ["predict", "--model", name, "--input", str(tmp_path / "landing"), "--output", str(out)]
    code, printed, said = keel(*args, "--dask-address", dask_cluster.scheduler_address)
    assert code == 1, said  # d.csv has a rejected row
    assert "28 rows scored, 1 rejected, from 4 file(s): 4 part(s) scored, 0 reused" in printed

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["version"] == "1" and manifest["parts_scored"] == 4 and manifest["parts_failed"] == 0
    assert [Path(p["input_file"]).name for p in manifest["parts"]] == sorted(good)
    for part in manifest["parts"]:
        source, scored = Path(part["input_file"]), out / part["part"]
        assert part["status"] == "scored" and part["part"] == f"parts/{source.name}.parquet"
        assert part["input_sha256"] == sha256(source) and part["part_sha256"] == sha256(scored)
        assert part["rows_scored"] == len(pd.read_parquet(scored)) == good[source.name]
        assert part["rows_rejected"] == (source.name == "d.csv")
        assert set(pd.read_parquet(scored)["input_file"]) == {str(source)}
    assert len(list((out / "parts").iterdir())) == 12  # each part with its errors file and its own manifest
    # Each worker that scored loaded the pinned version once, into its per-process cache.
    with Client(dask_cluster, set_as_default=False) as client:  # not the default: the runner below makes its own
        cached = client.run(lambda: [uri for _, uri in importlib.import_module("keel.serving.pyfunc")._CACHED])
    assert sorted(cached.values()) in ([[], [f"models:/{name}/1"]], [[f"models:/{name}/1"]] * 2)

    # A re-run, on a fresh local cluster: every part reused, no part file written again.
    before = {p.name: (p.stat().st_mtime_ns, sha256(p)) for p in (out / "parts").iterdir()}
    code, printed, said = keel(*args, "--workers", "2")
    assert code == 1, said
    assert "28 rows scored, 1 rejected, from 4 file(s): 0 part(s) scored, 4 reused" in printed
    again = json.loads((out / "manifest.json").read_text())
    assert [p["status"] for p in again["parts"]] == ["reused"] * 4 and again["parts_scored"] == 0
    assert {p.name: (p.stat().st_mtime_ns, sha256(p)) for p in (out / "parts").iterdir()} == before
    assert [p["part_sha256"] for p in again["parts"]] == [p["part_sha256"] for p in manifest["parts"]]


def test_a_corrupt_file_fails_its_part_alone_with_its_reason(tmp_path, small_rows, registered_model, dask_cluster):
    from prefect.client.orchestration import get_client

    name = registered_model["registered"].name
    landing = tmp_path / "landing"
    landing.mkdir()
    small_rows.iloc[:12].to_csv(landing / "a.csv", index=False)
    small_rows.iloc[12:20].to_csv(landing / "c.csv", index=False)
    broken = landing / "broken.csv.gz"
    small_rows.iloc[:30].to_csv(broken, index=False, compression="gzip")
    broken.write_bytes(broken.read_bytes()[:2000])
    out = tmp_path / "scored"
    code, _, err = keel("predict", "--model", name, "--input", str(landing), "--output", str(out),
                        "--dask-address", dask_cluster.scheduler_address)
    assert code == 2, err
    assert f"1 of 3 input files could not be scored and the others were ({out}/manifest.json lists every part)" in err
    assert f"{broken}: the gzip stream is truncated" in err

    parts = {Path(p["input_file"]).name: p for p in json.loads((out / "manifest.json").read_text())["parts"]}
    assert parts["broken.csv.gz"]["status"] == "failed" and parts["broken.csv.gz"]["user_error"]
    assert parts["broken.csv.gz"]["reason"].startswith(f"{broken}: the gzip stream is truncated")
    assert parts["broken.csv.gz"]["input_sha256"] == sha256(broken) and parts["broken.csv.gz"]["part"] is None
    assert [parts[n]["status"] for n in ("a.csv", "c.csv")] == ["scored", "scored"]
    assert [parts[n]["rows_scored"] for n in ("a.csv", "c.csv")] == [12, 8]
    assert sorted(p.name for p in (out / "parts").iterdir() if not p.name.startswith("a.csv")) == \
        ["c.csv.errors.parquet", "c.csv.manifest.json", "c.csv.parquet"]  # nothing, not even a temporary, for broken
    with get_client(sync_client=True) as client:
        run = next(r for r in client.read_flow_runs() if r.parameters.get("output") == str(out))
        tries = {t.name: t.run_count for t in client.read_task_runs() if t.flow_run_id == run.id
                 and t.name.startswith("score-part")}
    assert len(tries) == 3 and max(tries.values()) == 1  # a user's mistake is never retried


@pytest.mark.parametrize("case", ["a file name", "a folder of the user's", "inside the input folder"])
def test_an_output_that_is_not_a_folder_keel_may_write_is_refused_before_any_work(tmp_path, small_rows,
                                                                                 registered_model, case):
    landing = tmp_path / "landing"
    landing.mkdir()
    small_rows.iloc[:5].to_csv(landing / "a.csv", index=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    output, expected = {"a file name": (tmp_path / "p.parquet", "names a parquet file"),
                        "a folder of the user's": (mine, "the folder holds files and Keel did not make it"),
                        "inside the input folder": (landing / "out", "inside the input folder")}[case]
    code, _, err = keel("predict", "--model", registered_model["registered"].name, "--input", str(landing),
                        "--output", str(output), "--workers", "2")
    assert code == 2 and expected in err, err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"] and sorted(p.name for p in landing.iterdir()) == ["a.csv"]
    assert not (tmp_path / "p.parquet").exists()


def test_a_dask_address_where_no_scheduler_answers_exits_2_at_once(tmp_path, small_rows):
    landing = tmp_path / "landing"
    landing.mkdir()
    small_rows.iloc[:5].to_csv(landing / "a.csv", index=False)
    code, _, err = keel("predict", "--model", "any", "--input", str(landing), "--output", str(tmp_path / "out"),
                        "--dask-address", "tcp://127.0.0.1:1")
    assert code == 2 and "--dask-address tcp://127.0.0.1:1: no Dask scheduler answers there" in err, err
    assert not (tmp_path / "out").exists()


def test_a_part_an_outage_left_unscored_is_told_apart_from_a_corrupt_file(tmp_path, small_rows):
    """What the job manifest and the command say when a part's last retry still met an outage
    (exit 1: not the user's to fix), beside a corrupt file (exit 2 alone)."""
    from keel.core.errors import DatasetError
    from keel.serving.parts import PartsFailedError, PartsIncompleteError, check_parts, write_job_manifest

    folder, model = str(tmp_path / "out"), {"name": "m", "version": "3", "run_id": "r"}
    files = [str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]
    small_rows.iloc[:3].to_csv(files[0], index=False)
    corrupt = DatasetError(f"{files[0]}: not a readable CSV table")
    manifest = write_job_manifest(folder, model, str(tmp_path), "parquet", files,
                                  [corrupt, ConnectionError("the tracking server did not answer")])
    assert [(p["status"], p["user_error"]) for p in manifest["parts"]] == [("failed", True), ("failed", False)]
    assert manifest["parts"][0]["input_sha256"] == sha256(Path(files[0])) and manifest["parts"][1]["input_sha256"] is None
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["parts_failed"] == 2
    with pytest.raises(PartsIncompleteError, match=r"b\.csv: ConnectionError: the tracking server did not answer"):
        check_parts(manifest)
    only_corrupt = write_job_manifest(folder, model, str(tmp_path), "parquet", files[:1], [corrupt])
    with pytest.raises(PartsFailedError, match=r"1 of 1 input files could not be scored \(.*a\.csv: not a readable CSV"):
        check_parts(only_corrupt)
