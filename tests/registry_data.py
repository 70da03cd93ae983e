"""A small real model registered through Keel's own registration, and what an attacker who can
write the artifact store would plant there."""

from __future__ import annotations

import os
import pickle
import shlex
from pathlib import Path

import pandas as pd
import torch

LABELS = [label for label in range(25) if label != 9]  # Sign-MNIST: no J
NAMES = [chr(ord("A") + label) for label in LABELS]


def model_config() -> dict:
    """The config train_stage writes for a Sign-MNIST CNN (fp32 inference: exact comparisons)."""
    return {"architecture": "cnn", "image": {"channels": 1, "height": 28, "width": 28}, "labels": LABELS,
            "class_names": NAMES, "label_column": "label", "pixel_columns": [f"pixel{i}" for i in range(1, 785)],
            "inference_precision": "fp32", "dataset": "sign-mnist-small", "dataset_version": "test"}


def register_small_model(rows: pd.DataFrame, name: str = "keel-trust", seed: int = 0) -> dict:
    """A freshly initialised CNN logged (keel.serving.pyfunc) and registered (keel.tracking.registry)
    as register_stage does, made champion. Returns its name, version, run id and the torch model."""
    from keel.serving.pyfunc import CLASSIFIER, log_pyfunc
    from keel.tracking.registry import register
    from keel.tracking import client as tracking
    from keel.models.networks import build_model

    torch.manual_seed(seed)
    model = build_model("cnn", 1, 28, 28, len(LABELS)).eval()
    client = tracking.client()
    run = client.create_run(tracking.experiment_id(client, "keel-trust-tests"))
    example = rows.head(2).drop(columns=["label"]).astype("int64")
    uri = log_pyfunc(run.info.run_id, CLASSIFIER, model, model_config(), example)
    version = register(client, uri, name, run.info.run_id, {"architecture": "cnn"})
    client.set_registered_model_alias(name, "champion", version)
    return {"name": name, "version": version, "run_id": run.info.run_id, "model": model, "model_uri": uri}


def artifact_folder(name: str, version: str) -> Path:
    """Where the embedded store keeps the version's files: what an attacker with write access
    to the artifact store (and nothing else) can change."""
    from keel.tracking import client as tracking
    from keel.core.io import local_path

    folder = local_path(tracking.client().get_model_version_download_uri(name, version))
    assert (folder / "MLmodel").exists(), folder
    return folder


class _Payload:
    """Unpickling this runs a shell command: `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def crafted_pickle(marker: Path) -> bytes:
    """A pickle whose loading creates `marker` (what the probe planted in a registered version)."""
    return pickle.dumps(_Payload(marker))
