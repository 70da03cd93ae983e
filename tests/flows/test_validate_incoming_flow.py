"""`keel validate` and `keel validate profile` as a data team runs them: real flows, real GX,
a real MLflow store; exit codes 0 (clean), 1 (data problems), 2 (command or file wrong)."""

import gzip
import json

import yaml

from cli.main import main
from tests.conftest import write_dataset_config
from tests.incoming_data import REPO, clean_batch

SIGN_MNIST = str(REPO / "conf" / "datasets" / "sign-mnist.yaml")


def _report(folder):
    return json.loads((folder / "report.json").read_text())


def test_exit_codes(tmp_path, keel_home):
    clean = tmp_path / "clean.csv"
    clean_batch().to_csv(clean, index=False)
    assert main(["validate", "--dataset-config", SIGN_MNIST, "--input", str(clean), "--report", str(tmp_path / "ok")]) == 0
    assert _report(tmp_path / "ok")["verdict"] == "accepted"

    bad = clean_batch().astype(object)
    bad.loc[7, "pixel300"] = 300
    bad.to_csv(tmp_path / "bad.csv", index=False)
    assert main(["validate", "--dataset-config", SIGN_MNIST, "--input", str(tmp_path / "bad.csv"), "--report", str(tmp_path / "bad")]) == 1
    report = _report(tmp_path / "bad")
    assert report["verdict"] == "accepted with quarantine" and report["failures"][0]["rule"] == "pixels must be at most 255"

    truncated = tmp_path / "cut.csv.gz"
    truncated.write_bytes(gzip.compress(clean.read_bytes())[:5000])
    assert main(["validate", "--dataset-config", SIGN_MNIST, "--input", str(truncated)]) == 2
    assert main(["validate", "--dataset", "no-such-dataset", "--input", str(clean)]) == 2


def test_profile_then_validate_then_curate_then_train_on_the_new_version(tmp_path, keel_home, small_rows):
    from keel.tracking import client as tracking
    from keel.modalities import ingest
    from keel.core.config import load_dataset_config

    base = tmp_path / "base.csv"
    small_rows.to_csv(base, index=False)
    suite = tmp_path / "expectations" / "sign-mnist-small.json"
    config_path = write_dataset_config(tmp_path, base, expectations=str(suite), validation={"min_rows": 20})
    assert main(["validate", "profile", "--dataset-config", str(config_path), "--epochs", "2"]) == 0
    doc = json.loads(suite.read_text())
    assert doc["inferred"] and doc["anomaly"]["model_uri"] == "models:/keel-sign-mnist-small-autoencoder/1"
    assert (suite.parent / doc["anomaly"]["weights"]).exists()
    version = tracking.client().get_model_version("keel-sign-mnist-small-autoencoder", "1")
    assert version.tags["threshold"] and version.tags["suite_sha256"]

    batch = clean_batch().iloc[:60]
    batch.to_csv(tmp_path / "landed.csv", index=False)
    code = main(["validate", "--dataset-config", str(config_path), "--input", str(tmp_path / "landed.csv"),
                 "--report", str(tmp_path / "landed"), "--curate"])
    assert code == 0, _report(tmp_path / "landed")
    config = load_dataset_config(config_path)
    curated = ingest(config).version
    assert curated.meta["rows"] == 540 and curated.meta["curated_batches"][0]["rows"] == 60

    # The next retraining picks the curated version up, validated by the same suite.
    from flows.training import training_flow
    from keel.core.config import TrainConfig

    result = training_flow(dataset_config=str(config_path), train=TrainConfig(epochs=1, batch_size=64))
    assert result.version.version == curated.id and result.validation["success"]
    assert yaml.safe_load(config_path.read_text())["expectations"] == str(suite)


def test_a_landing_folder_validates_each_new_file_once(tmp_path, keel_home):
    """The scheduled validation: every file of the folder without a report; the worst exit code."""
    landing = tmp_path / "landing"
    landing.mkdir()
    clean_batch().head(100).to_csv(landing / "good.csv", index=False)
    bad = clean_batch().head(100).astype(object)
    bad.loc[3, "pixel10"] = 300
    bad.to_csv(landing / "bad.csv", index=False)
    assert main(["validate", "--dataset-config", SIGN_MNIST, "--input", str(landing)]) == 1
    reports = keel_home / "reports" / "validation" / "sign-mnist" / "incoming"
    verdicts = {p.parent.name.split("-")[0]: _report(p.parent)["verdict"] for p in reports.glob("*/report.json")}
    assert verdicts == {"good": "accepted", "bad": "accepted with quarantine"}
    assert main(["validate", "--dataset-config", SIGN_MNIST, "--input", str(landing)]) == 0  # nothing new
    assert len(list(reports.glob("*/report.json"))) == 2


def test_a_report_folder_that_is_not_a_keel_report_exits_2_and_is_kept(tmp_path, keel_home, capsys):
    """`keel validate --report EXISTING_DIR` used to delete what the folder held."""
    clean = tmp_path / "clean.csv"
    clean_batch().head(100).to_csv(clean, index=False)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("two years of work")
    assert main(["validate", "--dataset-config", SIGN_MNIST, "--input", str(clean), "--report", str(mine)]) == 2
    assert "is not a Keel report" in capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["thesis.tex"] and (mine / "thesis.tex").read_text() == "two years of work"
