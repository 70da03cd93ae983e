"""The typed contracts between stages, tasks and flows keep the formats Keel writes."""

import json

import pytest
from pydantic import ValidationError

from keel.core.contracts import IngestedVersion, ModelSpec, RunRef, TrainingOutcome, TrainingSummary, Verdict

PIXEL_CONFIG = {"architecture": "cnn", "image": {"height": 28, "width": 28, "channels": 1}, "labels": [0, 1, 2],
                "class_names": ["A", "B", "C"], "label_column": "label",
                "pixel_columns": [f"pixel{i}" for i in range(1, 785)], "inference_precision": "auto",
                "dataset": "sign-mnist", "dataset_version": "0123456789abcdef"}
PHOTO_CONFIG = {"architecture": "transfer", "build": {"backbone": "resnet18", "image_size": 160}, "input": "image",
                "pretrained": "torchvision:IMAGENET1K_V1", "image": {"height": 160, "width": 160, "channels": 3},
                "labels": [0, 1], "class_names": ["apple", "pear"], "label_column": "label", "pixel_columns": [],
                "inference_precision": "auto", "dataset": "fruits", "dataset_version": "fedcba9876543210"}


@pytest.mark.parametrize("config", [PIXEL_CONFIG, PHOTO_CONFIG], ids=["pixel-table", "image-folder"])
def test_a_model_spec_dumps_the_model_config_json_as_it_was(config):
    """The model_config saved with the weights and logged as model_config.json: same keys, same
    order, no null build/input/pretrained keys on a pixel model."""
    spec = ModelSpec.model_validate(config)
    assert json.dumps(spec.model_dump(), indent=2) == json.dumps(config, indent=2)
    assert spec.image_input == (config["architecture"] == "transfer")


def test_a_model_spec_keeps_keys_it_does_not_know():
    """A model registered by another Keel version may carry more keys: they travel on untouched."""
    spec = ModelSpec.model_validate({**PIXEL_CONFIG, "calibration": {"temperature": 1.5}})
    assert spec.model_dump()["calibration"] == {"temperature": 1.5}
    with pytest.raises(ValidationError, match="architecture"):
        ModelSpec.model_validate({k: v for k, v in PIXEL_CONFIG.items() if k != "architecture"})


def test_stage_results_survive_json_and_refuse_unknown_fields():
    """Prefect may store a task's result as JSON: what comes back equals what went in; a misspelt
    field is an error, not a silently dropped value."""
    version = IngestedVersion(dataset="d", version="v1", version_dir="/tmp/d/v1", rows=10, reused=False, seconds=0.5,
                              split="random split", leakage={"near_copy_share": 0.1, "nn_accuracy": 0.5, "examples": []})
    trained = TrainingSummary(model_path="/tmp/m.pt", epochs_run=2, best_epoch=2, stopped_early=False,
                              resumed_from_epoch=0, train_seconds=1.0, loop_seconds=1.5, device="cpu", precision="fp32",
                              planned_epochs=2, history=[{"epoch": 1, "val_accuracy": 0.5}, {"epoch": 2, "val_accuracy": 0.75}])
    for result in (version, trained, RunRef(run_id="r", experiment_id="1", checkpoint_dir="/tmp/c")):
        assert type(result).model_validate_json(result.model_dump_json()) == result
    assert type(trained.history[0]["epoch"]) is int  # epochs stay whole numbers
    assert version.path.name == "v1"
    with pytest.raises(ValidationError, match="model_pth"):
        RunRef(run_id="r", experiment_id="1", checkpoint_dir="/tmp/c", model_pth="/tmp/m.pt")
    assert {"version", "run", "trained", "registered", "verdict"} <= set(TrainingOutcome.model_fields)
    assert Verdict(promote=False, reasons=["a", "b"], challenger_version="2", challenger_accuracy=0.5).text() == "not promoted: a; b"
