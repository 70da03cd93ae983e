"""The batch scoring flow through Prefect, on a real registered model."""

import pandas as pd
import pytest

from flows.batch_predict import batch_predict_flow

pytestmark = pytest.mark.flows


def test_batch_predict_flow_scores_and_reports(tmp_path, small_rows, registered_model):
    name = registered_model["registered"]["name"]
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

    from keel.errors import DatasetError

    broken = tmp_path / "broken.csv.gz"
    small_rows.head(30).to_csv(broken, index=False, compression="gzip")
    broken.write_bytes(broken.read_bytes()[:2000])
    started = time.monotonic()
    with pytest.raises(DatasetError, match=r"broken\.csv\.gz: the gzip stream is truncated"):
        batch_predict_flow(model=registered_model["registered"]["name"], input_path=str(broken),
                           output=str(tmp_path / "p.parquet"))
    assert time.monotonic() - started < 5  # no 5 s retry delay
    assert not (tmp_path / "p.parquet").exists()
