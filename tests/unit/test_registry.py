"""The registered pyfunc model scores raw pixel rows through MLflow's own loader."""

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from keel import tracking


@pytest.fixture
def registered(registered_model):
    return registered_model["registered"], registered_model["model"], registered_model["metrics"]


@pytest.fixture
def registry_home(registered_model):
    return registered_model["home"]


def test_pyfunc_scores_raw_rows_like_the_trained_model(registered, small_rows):
    result, model, _ = registered
    loaded = mlflow.pyfunc.load_model(f"models:/{result['name']}/{result['version']}")
    rows = small_rows.head(25)  # raw rows: label column included, integer pixels
    out = loaded.predict(rows)
    assert list(out.columns[:3]) == ["label", "class_name", "confidence"]
    assert len(out) == 25 and out.filter(like="prob_").shape[1] == 24
    np.testing.assert_allclose(out.filter(like="prob_").sum(axis=1), 1.0, atol=1e-3)
    assert set(out["label"]) <= set(range(25)) - {9}
    pixels = torch.from_numpy(rows.drop(columns="label").to_numpy(np.float32).reshape(-1, 1, 28, 28) / 255)
    with torch.no_grad():
        direct = model(pixels.contiguous(memory_format=torch.channels_last)).argmax(1).numpy()
    labels = np.array([l for l in range(25) if l != 9])
    agreement = (labels[direct] == out["label"].to_numpy()).mean()
    assert agreement >= 0.9  # bf16 inference may flip a near-tie


def test_registration_tags_aliases_and_run(registered):
    result, _, metrics = registered
    client = tracking.client()
    version = client.get_model_version(result["name"], result["version"])
    assert version.tags["dataset"] == "sign-mnist-small"
    assert version.tags["dataset_version"] == result["tags"]["dataset_version"]
    assert float(version.tags["evaluation_accuracy"]) == pytest.approx(metrics["evaluation"]["accuracy"], abs=1e-6)
    assert len(version.tags["git_commit"]) >= 40  # the checkout's commit, not "unknown"
    assert str(client.get_model_version_by_alias(result["name"], "challenger").version) == result["version"]
    assert str(client.get_model_version_by_alias(result["name"], "champion").version) == result["version"]
    run = client.get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["evaluation_accuracy"] == pytest.approx(metrics["evaluation"]["accuracy"])
    assert [h.step for h in client.get_metric_history(result["run_id"], "val_accuracy")] == [1]
    artifacts = {a.path for folder in ("training", "evaluation") for a in client.list_artifacts(result["run_id"], folder)}
    assert "training/learning_curves.png" in artifacts and "evaluation/evaluation_confusion_matrix.png" in artifacts
    assert run.inputs.dataset_inputs[0].dataset.digest == result["tags"]["dataset_version"]


def test_pyfunc_rejects_rows_without_pixels(registered):
    result, _, _ = registered
    loaded = mlflow.pyfunc.load_model(f"models:/{result['name']}@champion")
    with pytest.raises(Exception, match="pixel"):
        loaded.predict(pd.DataFrame({"label": [1], "pixel1": [3]}))


def test_embedded_store_lives_in_mlruns(registered, registry_home):
    assert (registry_home / "mlruns" / "mlflow.db").exists()
    assert any((registry_home / "mlruns" / "artifacts").iterdir())
    assert sorted(p.name for p in (registry_home / "mlruns").iterdir()) == ["artifacts", "mlflow.db"]
