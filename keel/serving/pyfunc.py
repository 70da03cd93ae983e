"""Keel's models as MLflow pyfunc models: what they take and return, how one is logged, and how
Keel builds a registered one from its verified files.

A logged model carries its preprocessing (its modality's `preprocess`; a text model its
tokenizer too, as the artifact `tokenizer`): MLflow's own loaders (`mlflow.pyfunc.load_model`,
`mlflow models predict`, `spark_udf`) take raw pixel rows, photo paths or texts and return
labels and probabilities. It is logged from code (MLflow's models-from-code: the model holds
mlflow_classifier.py or mlflow_anomaly_scorer.py, beside this module, instead of a pickle), and
Keel's own loader (`load_verified_model`) runs neither file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch
from mlflow.models import infer_signature

import keel
from keel.core.errors import KeelError
from keel.modalities import modality_for
from keel.models.anomaly import load_autoencoder, reconstruction_errors
from keel.models.networks import build_model, inference_model
from keel.models.text import build_text_model
from keel.tracking.client import tracking_uri
from keel.tracking.registry import verified_artifacts
from keel.models.device import predict_logits, select_device, select_precision


class Classifier(mlflow.pyfunc.PythonModel):
    """Pixel rows (`pixel1..pixelN`, 0-255), photo files (a `path` column) or texts (the model's
    text column, `text` for the shipped datasets) in; label, class name, confidence and
    per-class probabilities out."""

    def load_context(self, context):
        self.config = json.loads(Path(context.artifacts["model_config"]).read_text())
        self.modality = modality_for(self.config)  # what it takes: pixel rows, photo files or texts
        self.device = select_device("auto")
        self.precision = select_precision(self.config.get("inference_precision", "auto"), self.device)
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        if self.config.get("input") == "text":
            if "tokenizer" not in context.artifacts:
                raise KeelError("this text model was logged without its tokenizer artifact, so its texts cannot be "
                                "tokenized; register it again with `keel train`")
            # Where the tokenizer lies is known only now: set at run time, never logged.
            self.config["tokenizer_file"] = str(context.artifacts["tokenizer"])
            model = build_text_model(self.config["build"], len(self.config["labels"]))
            model.load_state_dict(state)
            self.model = model.eval().to(self.device)
            return
        image = self.config["image"]
        model = build_model(self.config["architecture"], image["channels"], image["height"], image["width"],
                            len(self.config["labels"]), **self.config.get("build", {}))
        model.load_state_dict(state)
        self.model = inference_model(model).to(self.device).to(memory_format=torch.channels_last)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        prepared = self.modality.preprocess(model_input, self.config)
        if len(prepared.problems):
            raise ValueError(prepared.first_problem())
        return predictions_frame(self.probabilities(prepared.inputs).cpu().numpy(), self.config)

    def probabilities(self, inputs: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
        """Class probabilities (float32, on the model's device) of uint8 N x C x H x W images or
        int64 token ids N x L (scored in length order: keel.models.device.predict_logits)."""
        if not len(inputs):
            return torch.zeros((0, len(self.config["labels"])), dtype=torch.float32)
        return torch.softmax(predict_logits(self.model, inputs, self.device, self.precision, batch_size), dim=1)

    def hold_tokenizer(self) -> None:
        """Points the config at a copy of the tokenizer that lives as long as this classifier
        (the verified download it was loaded from is removed once loading ends)."""
        descriptor, copy = tempfile.mkstemp(prefix="keel-tokenizer-", suffix=".json")
        with os.fdopen(descriptor, "wb") as target, open(self.config["tokenizer_file"], "rb") as source:
            shutil.copyfileobj(source, target)
        weakref.finalize(self, _remove, copy)
        self.config["tokenizer_file"] = copy


PixelClassifier = Classifier  # the name versions registered before text models import (mlflow_pixel_classifier.py)


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class AnomalyScorer(mlflow.pyfunc.PythonModel):
    """Pixel rows in; the autoencoder's anomaly score and whether it passes the suite's threshold out."""

    def load_context(self, context):
        self.config = json.loads(Path(context.artifacts["anomaly_config"]).read_text())
        self.model = load_autoencoder(Path(context.artifacts["weights"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        scores = reconstruction_errors(self.model, model_input[self.config["pixel_columns"]].to_numpy(np.float32))
        return pd.DataFrame({"anomaly_score": scores, "anomalous": scores > self.config["threshold"]})


def predictions_frame(probabilities: np.ndarray, config: dict) -> pd.DataFrame:
    """One row per input: predicted raw label, class name, confidence, then prob_<class> columns."""
    labels = np.asarray(config["labels"])
    names = np.asarray(config["class_names"])
    top = probabilities.argmax(axis=1) if len(probabilities) else np.array([], dtype=int)
    frame = pd.DataFrame({
        "label": labels[top].astype(np.int64),
        "class_name": names[top],
        "confidence": probabilities.max(axis=1) if len(probabilities) else np.array([], dtype=np.float32),
    })
    probs = pd.DataFrame(probabilities, columns=[f"prob_{n}" for n in names], index=frame.index)
    return pd.concat([frame, probs], axis=1)


@dataclass(frozen=True)
class PyfuncKind:
    """What tells Keel's logged models apart; everything else about logging them is shared."""

    name: str  # the model's name in its run
    code: str  # its models-from-code file, beside this module
    config: str  # the key of its JSON config artifact (and the file's stem)
    python_model: type  # the class that code file builds
    params: dict | None = None  # the inference parameters predict takes, with their defaults (the signature's)


CLASSIFIER = PyfuncKind("model", "mlflow_classifier.py", "model_config", Classifier)
ANOMALY_SCORER = PyfuncKind("autoencoder", "mlflow_anomaly_scorer.py", "anomaly_config", AnomalyScorer)


def log_pyfunc(run_id: str, kind: PyfuncKind, weights: torch.nn.Module | Path, config: dict,
               input_example: pd.DataFrame, extra_artifacts: dict[str, str | Path] | None = None) -> str:
    """Logs a Keel model as a pyfunc model in run `run_id` and returns its model URI.

    `weights`: a torch model (its state dict is saved) or a weights file; `extra_artifacts`:
    other files the model needs, by artifact key (a text model's `tokenizer`). The model is
    built once as MLflow will build it, and what it returns for `input_example` (the columns it
    takes) gives the signature; the requirements are pinned, the code is the `keel` package."""
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {"weights": str(_weights_file(weights, Path(tmp) / "weights.pt")),
                     kind.config: str(Path(tmp) / f"{kind.config}.json"),
                     **{key: str(path) for key, path in (extra_artifacts or {}).items()}}
        Path(artifacts[kind.config]).write_text(json.dumps(config, indent=2))
        model = kind.python_model()
        model.load_context(_Context(artifacts))
        example = model_input(input_example, config)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ii]nteger column")
            signature = infer_signature(example, model.predict(None, example), params=kind.params)
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            info = mlflow.pyfunc.log_model(
                name=kind.name,
                # Models-from-code: the model holds the code file that builds it, not a pickle of it
                # (MLflow's own loaders then unpickle nothing; Keel's never run it).
                python_model=str(Path(__file__).with_name(kind.code)),
                artifacts=artifacts, code_paths=[str(Path(keel.__file__).parent)], signature=signature,
                input_example=example, pip_requirements=pip_requirements(config))
    return info.model_uri


def _weights_file(weights: torch.nn.Module | Path, path: Path) -> Path:
    """A weights file: `weights` itself, or a torch model's state dict (CPU tensors) saved at `path`."""
    if isinstance(weights, torch.nn.Module):
        torch.save({k: v.detach().cpu() for k, v in weights.state_dict().items()}, path)
        return path
    return Path(weights)


def model_input(frame: pd.DataFrame, config: dict) -> pd.DataFrame:
    """The columns of `frame` a model takes, typed as its signature says: photo paths and texts
    as strings, pixels as integers (0-255: long, so CSV rows load as they are)."""
    if config.get("input") == "image":
        return frame[["path"]].astype(str)
    if config.get("input") == "text":
        column = config.get("text_column") or "text"
        return frame[[column]].astype(str)
    return frame[config["pixel_columns"]].astype("int64")


def pip_requirements(config: dict | None = None) -> list[str]:
    """Pinned requirements of the logged model (given, so MLflow need not infer them slowly);
    a text model's also name what builds its encoder and reads its tokenizer (ftfy: the rule of
    a usable text, keel.data.text_rule, which every model's modalities import)."""
    names = ["mlflow", "torch", "torchvision", "pandas", "numpy", "pydantic", "pyyaml", "pillow", "fsspec", "ftfy"]
    if (config or {}).get("input") == "text":
        names += ["transformers", "tokenizers"]
    return [f"{name}=={metadata.version(name)}" for name in names]


class _Context:
    """The slice of mlflow's PythonModelContext that the models' load_context reads."""

    def __init__(self, artifacts: dict):
        self.artifacts = artifacts


def load_verified_model(model_uri: str) -> Classifier:
    """The Classifier of a registered version (`models:/NAME/VERSION`, `models:/NAME@alias`;
    its torch model, device and config loaded), built from files keel.tracking.registry
    verified against the manifest Keel recorded at registration (UntrustedModelError otherwise).

    Nothing is unpickled and no code from the artifact store runs: the config is JSON, the
    weights load with `weights_only=True`, a text model's tokenizer is JSON too, and the class
    is this module's."""
    with verified_artifacts(model_uri) as (ref, artifacts):
        if {"weights", "model_config"} - set(artifacts):
            raise KeelError(f"model {ref.name} version {ref.version} is not a Keel classifier (its MLmodel names no "
                            "weights and model_config artifacts); score it with the model it was registered for")
        classifier = Classifier()
        classifier.load_context(_Context(artifacts))
        if "tokenizer_file" in classifier.config:
            classifier.hold_tokenizer()
    return classifier


# Classifiers a process keeps for cached_verified_model: (tracking URI, model URI) -> Classifier,
# the most recently used last. Two: a worker that moves on to the next pinned version drops
# the one before it rather than holding every version it ever scored.
_CACHED: OrderedDict[tuple[str, str], Classifier] = OrderedDict()
_CACHED_LOCK = threading.Lock()
CACHED_MODELS = 2


def cached_verified_model(model_uri: str) -> Classifier:
    """load_verified_model's Classifier, loaded and verified once per process for each store
    and pinned version (`models:/NAME/VERSION`), then kept.

    Only the parts path uses it (keel.serving.parts): a Dask worker scores file after file
    with the same pinned version, and loading and verifying it for each file would cost more
    than scoring a small one. Every other caller keeps load_verified_model, which reads and
    verifies the version's files on every call. The key holds the tracking URI too, so a
    worker serving two stores never mixes up their versions of the same name."""
    key = (tracking_uri(), model_uri)
    with _CACHED_LOCK:  # one load per key, even with several threads per worker
        if key not in _CACHED:
            _CACHED[key] = load_verified_model(model_uri)
            while len(_CACHED) > CACHED_MODELS:
                _CACHED.popitem(last=False)
        _CACHED.move_to_end(key)
        return _CACHED[key]
