"""Transfer learning on a small real subset of the fruit photos: both phases through the
training flow, a registered model as the next model's backbone, and image-folder scoring."""

import mlflow
import numpy as np
import pandas as pd

from cli.main import main
from keel.tracking import client as tracking
from keel.tracking.promotion import current_version
from tests.flows.test_training_flow import _artifact_keys
from tests.image_data import fruits_config, plant_bad_files, small_fruits

TINY = ["--model", "resnet18", "--image-size", "32", "--head-epochs", "2", "--epochs", "1", "--batch-size", "8",
        "--workers", "1", "--floor", "0"]


def test_two_phases_then_a_registered_backbone_then_scoring_photos(tmp_path, keel_home):
    root = small_fruits(tmp_path / "photos")
    quarantined = plant_bad_files(root)
    config = fruits_config(tmp_path, root)
    assert main(["train", "--dataset-config", str(config), *TINY]) == 0

    client = tracking.client()
    assert current_version(client, "keel-fruits-small", "champion") == "1"
    version = client.get_model_version("keel-fruits-small", "1")
    run = client.get_run(version.run_id)
    assert run.data.tags["keel.pretrained"] == "none"  # nothing downloaded: trained from scratch, and said so
    assert run.data.tags["keel.phase_boundary_epoch"] == "2"
    phases = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "phase")}
    assert phases == {1: 1.0, 2: 1.0, 3: 2.0}  # one run, the phase boundary visible in its curves
    assert list((keel_home / "data" / "features" / "fruits-small").glob("*.pt"))  # phase 1 ran on cached features
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/evaluation_confusion_matrix.png", "evaluation/evaluation_worst_classified.png"} <= artifacts
    assert {"evaluation-confusion-matrix", "evaluation-worst-classified"} <= _artifact_keys()  # Prefect artifacts too
    # The bad photos were quarantined at ingest, not trained on.
    versions = list((keel_home / "data" / "versions" / "fruits-small").iterdir())
    quarantine = (versions[0] / "quarantine.csv").read_text()
    assert all(path in quarantine for path, action in quarantined.items() if action.startswith("quarantine"))

    # Real transfer inside the registry: the champion's trained features start the next model.
    assert main(["train", "--dataset-config", str(config), *TINY, "--backbone", "models:/keel-fruits-small@champion",
                 "--model-name", "keel-fruits-child"]) == 0
    child = client.get_model_version("keel-fruits-child", "1")
    assert client.get_run(child.run_id).data.tags["keel.pretrained"] == "registry:models:/keel-fruits-small@champion"

    # Scoring a folder of photos: rows keyed by relative path, bad files in the errors file.
    landing = tmp_path / "to-score"
    for path in sorted((root / "valid").rglob("*.jpg"))[:5]:
        target = landing / path.relative_to(root / "valid")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    (landing / "freshapples" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    out = tmp_path / "scores.parquet"
    assert main(["predict", "--model", "keel-fruits-small", "--input", str(landing), "--output", str(out)]) == 1
    scores = pd.read_parquet(out)
    assert len(scores) == 5 and all("/" in i and not i.startswith("/") for i in scores["id"])
    errors = pd.read_parquet(tmp_path / "scores.errors.parquet")
    assert errors["id"].tolist() == ["freshapples/broken.jpg"] and "not a decodable image" in errors["reason"][0]
    # The same model through MLflow's own loader, given photo paths.
    loaded = mlflow.pyfunc.load_model("models:/keel-fruits-small@champion")
    direct = loaded.predict(pd.DataFrame({"path": [str(landing / i) for i in scores["id"]]}))
    assert direct["class_name"].tolist() == scores["class_name"].tolist()
    np.testing.assert_allclose(direct["confidence"].to_numpy(), scores["confidence"].to_numpy(), rtol=1e-4)
