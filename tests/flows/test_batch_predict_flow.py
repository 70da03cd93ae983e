"""The batch scoring flow through Prefect, on a real registered model."""

import pandas as pd
import pytest

from flows.batch_predict import batch_predict_flow


def test_batch_predict_flow_scores_and_reports(tmp_path, small_rows, registered_model):
    name = registered_model["registered"].name
    rows = small_rows.head(40).copy().astype(object)
    rows.loc[5, "pixel10"] = 999
    source = tmp_path / "landing.csv"
    rows.to_csv(source, index=False)
    out = tmp_path / "scored" / "preds.parquet"
    result = batch_predict_flow(model=f"{name}@champion", input_path=str(source), output=str(out))
    assert result["rows_scored"] == 39 and result["rows_rejected"] == 1
    assert result["model"]["version"] == "1"
    assert len(pd.read_parquet(out)) == 39
    assert pd.read_parquet(out.with_name("preds.errors.parquet"))["row"].tolist() == [6]
    again = batch_predict_flow(model=name, input_path=str(source), output=str(out))
    assert again["reused"]


def test_an_unreadable_file_fails_once_without_retries(tmp_path, small_rows, registered_model):
    """A user's mistake is not an outage: the flow fails at once, naming the file."""
    import time

    from keel.core.errors import DatasetError

    broken = tmp_path / "broken.csv.gz"
    small_rows.head(30).to_csv(broken, index=False, compression="gzip")
    broken.write_bytes(broken.read_bytes()[:2000])
    started = time.monotonic()
    with pytest.raises(DatasetError, match=r"broken\.csv\.gz: the gzip stream is truncated"):
        batch_predict_flow(model=registered_model["registered"].name, input_path=str(broken),
                           output=str(tmp_path / "p.parquet"))
    assert time.monotonic() - started < 5  # no 5 s retry delay
    assert not (tmp_path / "p.parquet").exists()


def test_keel_predict_refuses_a_tampered_version_once_and_runs_nothing(tmp_path, keel_home, small_rows, capsys):
    """A planted pickle in the artifact store: `keel predict` exits 2 naming the file, the score
    task runs once (no retries), and the payload never runs."""
    from prefect.client.orchestration import get_client

    from cli.main import main
    from tests.registry_data import artifact_folder, crafted_pickle, register_small_model

    name = "keel-tampered-scoring"
    register_small_model(small_rows, name=name)
    marker = tmp_path / "MARKER"
    (artifact_folder(name, "1") / "artifacts" / "weights.pt").write_bytes(crafted_pickle(marker))
    source = tmp_path / "rows.csv"
    small_rows.head(10).to_csv(source, index=False)
    out = tmp_path / "scored.parquet"
    assert main(["predict", "--model", name, "--input", str(source), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert (f"model {name} version 1 holds artifacts/weights.pt, whose sha256 differs from the one Keel recorded, "
            "so Keel does not load it") in err
    assert not marker.exists() and not out.exists()
    with get_client(sync_client=True) as client:
        run = next(r for r in client.read_flow_runs() if r.parameters.get("model") == name)
        attempts = {t.name.split("-")[0]: t.run_count for t in client.read_task_runs() if t.flow_run_id == run.id}
    assert attempts.get("score") == 1  # a KeelError is never retried


def test_an_output_that_is_the_input_exits_2_and_leaves_the_input_alone(tmp_path, small_rows, registered_model, capsys):
    """`keel predict --input same.csv --output same.csv` used to replace the input with a parquet."""
    from cli.main import main

    source = tmp_path / "same.csv"
    small_rows.head(20).to_csv(source, index=False)
    before = source.read_bytes()
    name = registered_model["registered"].name
    assert main(["predict", "--model", name, "--input", str(source), "--output", str(source)]) == 2
    assert "the output is the input file" in capsys.readouterr().err
    assert source.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["same.csv"]
