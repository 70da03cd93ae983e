"""Logging Keel models as MLflow pyfunc models and registering them.

The logged model carries its preprocessing: MLflow's own loaders (`mlflow.pyfunc.load_model`,
`mlflow models predict`, `spark_udf`) take raw pixel rows and return labels and probabilities.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

import keel
from keel.core.errors import KeelError
from keel.models.networks import build_model, inference_model


@dataclass
class ModelRef:
    """A registered model version, resolved from NAME, NAME@alias or NAME/version."""

    name: str
    version: str
    run_id: str
    reference: str
    architecture: str = ""

    @property
    def image_model(self) -> bool:
        """A model trained on an image folder: it scores photo files, not pixel rows."""
        return self.architecture == "transfer"

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def resolve_model(client, reference: str) -> ModelRef:
    """NAME (meaning NAME@champion), NAME@alias or NAME/version -> the concrete version."""
    from mlflow.exceptions import MlflowException

    ref = reference.removeprefix("models:/")
    try:
        if "@" in ref:
            name, alias = ref.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        elif "/" in ref:
            name, number = ref.rsplit("/", 1)
            mv = client.get_model_version(name, number)
        else:
            name = ref
            mv = client.get_model_version_by_alias(name, "champion")
    except MlflowException as exc:
        raise KeelError(f"model {reference} not found in the registry ({exc.message.splitlines()[0]}); "
                        "check the name, alias or version with `keel models NAME`") from None
    return ModelRef(name=name, version=str(mv.version), run_id=mv.run_id or "", reference=reference,
                    architecture=(mv.tags or {}).get("architecture", ""))


class PixelClassifier(mlflow.pyfunc.PythonModel):
    """Pixel rows (`pixel1..pixelN`, 0-255) in; label, class name, confidence and per-class probabilities out."""

    def load_context(self, context):
        from keel.training.train import select_device, select_precision

        self.config = json.loads(Path(context.artifacts["model_config"]).read_text())
        image = self.config["image"]
        self.device = select_device("auto")
        self.precision = select_precision(self.config.get("inference_precision", "auto"), self.device)
        model = build_model(self.config["architecture"], image["channels"], image["height"], image["width"],
                            len(self.config["labels"]), **self.config.get("build", {}))
        state = torch.load(context.artifacts["weights"], map_location="cpu", weights_only=True)
        model.load_state_dict(state)
        self.model = inference_model(model).to(self.device).to(memory_format=torch.channels_last)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from keel.training.train import predict_logits

        if self.config.get("input") == "image":
            images = paths_to_images(model_input, self.config)
        else:
            images = rows_to_images(model_input, self.config)
        logits = predict_logits(self.model, images, self.device, self.precision)
        return predictions_frame(torch.softmax(logits, dim=1).cpu().numpy(), self.config)


def rows_to_images(frame: pd.DataFrame, config: dict) -> torch.Tensor:
    """uint8 N x C x H x W images from pixel rows; a clear error names the bad column or row."""
    columns = config["pixel_columns"]
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"input rows lack pixel columns {shown}; send columns {columns[0]}..{columns[-1]}")
    try:
        pixels = frame[columns].to_numpy(dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"pixel columns must be numbers 0-255 ({exc})") from None
    bad = np.isnan(pixels) | (pixels < 0) | (pixels > 255) | (pixels != np.round(pixels))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"row {row} column {columns[col]} holds {pixels[row, col]!r}; pixels must be whole numbers 0-255")
    image = config["image"]
    array = pixels.astype(np.uint8).reshape(len(frame), image["height"], image["width"], image["channels"])
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


def paths_to_images(frame: pd.DataFrame, config: dict) -> torch.Tensor:
    """uint8 N x C x H x W images from a `path` column of photo files (paths or fsspec URLs),
    decoded and resized as ingest stores them; an unreadable photo is an error naming it."""
    from keel.data.imagefolder import decode
    from keel.core.io import read_bytes

    if "path" not in frame.columns:
        raise ValueError("send a `path` column: one photo file (local path or URL) per row")
    image = config["image"]
    out = []
    for path in frame["path"].astype(str):
        decoded = decode(read_bytes(path), path, image["height"], image["width"], image["channels"], min_side=1)
        if decoded.pixels is None:
            raise ValueError(f"{path}: {decoded.reason}")
        out.append(decoded.pixels)
    array = np.stack(out) if out else np.zeros((0, image["height"], image["width"], image["channels"]), np.uint8)
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


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


def pip_requirements() -> list[str]:
    """Pinned requirements of the logged model (given, so MLflow need not infer them slowly)."""
    return [f"{name}=={metadata.version(name)}" for name in ("mlflow", "torch", "torchvision", "pandas", "numpy", "pydantic", "pyyaml",
                                                                  "pillow", "fsspec")]


def log_pixel_classifier(run_id: str, model: torch.nn.Module, model_config: dict, input_example: pd.DataFrame) -> str:
    """Logs `model` as a pyfunc model in run `run_id` and returns its model URI."""
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "weights.pt"
        config_path = Path(tmp) / "model_config.json"
        torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, weights)
        config_path.write_text(json.dumps(model_config, indent=2))
        if model_config.get("input") == "image":
            example = input_example[["path"]].astype(str)
        else:
            # Pixels are integers 0-255: the signature says long, so CSV rows load as they are.
            example = input_example[model_config["pixel_columns"]].astype("int64")
        classifier = PixelClassifier()
        classifier.load_context(_Context({"weights": str(weights), "model_config": str(config_path)}))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ii]nteger column")
            signature = infer_signature(example, classifier.predict(None, example))
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            info = mlflow.pyfunc.log_model(
                name="model",
                # Models-from-code: the model holds the code file that builds the classifier, not a
                # pickle of it (MLflow's own loaders then unpickle nothing; Keel's never run it).
                python_model=str(Path(__file__).with_name("mlflow_pixel_classifier.py")),
                artifacts={"weights": str(weights), "model_config": str(config_path)},
                code_paths=[str(Path(keel.__file__).parent)],
                signature=signature,
                input_example=example,
                pip_requirements=pip_requirements(),
            )
    return info.model_uri


class AnomalyScorer(mlflow.pyfunc.PythonModel):
    """Pixel rows in; the autoencoder's anomaly score and whether it passes the suite's threshold out."""

    def load_context(self, context):
        from keel.models.anomaly import load_autoencoder

        self.config = json.loads(Path(context.artifacts["anomaly_config"]).read_text())
        self.model = load_autoencoder(Path(context.artifacts["weights"]))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from keel.models.anomaly import reconstruction_errors

        scores = reconstruction_errors(self.model, model_input[self.config["pixel_columns"]].to_numpy(np.float32))
        return pd.DataFrame({"anomaly_score": scores, "anomalous": scores > self.config["threshold"]})


def log_anomaly_scorer(run_id: str, weights: Path, anomaly_config: dict, input_example: pd.DataFrame) -> str:
    """Logs the suite's autoencoder as a pyfunc model in run `run_id`; returns its model URI."""
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        config_path = Path(tmp) / "anomaly_config.json"
        config_path.write_text(json.dumps(anomaly_config, indent=2))
        artifacts = {"weights": str(weights), "anomaly_config": str(config_path)}
        scorer = AnomalyScorer()
        scorer.load_context(_Context(artifacts))
        example = input_example[anomaly_config["pixel_columns"]].astype("int64")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*[Ii]nteger column")
            signature = infer_signature(example, scorer.predict(None, example))
        with mlflow.start_run(run_id=run_id, log_system_metrics=False):
            info = mlflow.pyfunc.log_model(
                name="autoencoder", python_model=str(Path(__file__).with_name("mlflow_anomaly_scorer.py")),
                artifacts=artifacts,
                code_paths=[str(Path(keel.__file__).parent)], signature=signature, input_example=example,
                pip_requirements=pip_requirements(),
            )
    return info.model_uri


class _Context:
    """The slice of mlflow's PythonModelContext that PixelClassifier.load_context reads."""

    def __init__(self, artifacts: dict):
        self.artifacts = artifacts


def register(client, model_uri: str, name: str, run_id: str, tags: dict[str, str], description: str = "",
             model_description: str = "Keel pixel classifier") -> str:
    """Registers `model_uri` as a new version of `name` and returns the version number."""
    try:
        client.get_registered_model(name)
    except mlflow.exceptions.MlflowException:
        try:
            client.create_registered_model(name, description=model_description)
        except mlflow.exceptions.MlflowException:
            pass  # created concurrently
    # A logged model's URI (models:/m-<id>) names its LoggedModel; a tracking server insists on
    # getting that id with the source (a local SQLite store does not check).
    model_id = model_uri.removeprefix("models:/") if model_uri.startswith("models:/m-") else None
    # Every file's sha256 (signed with the team key, if set) goes into the tracking store with
    # the version itself: a load checks the artifacts against it (keel.tracking.trust).
    from keel.tracking.trust import registration_tags

    tags = {**tags, **registration_tags(client, name, model_uri)}
    version = client.create_model_version(name, source=model_uri, run_id=run_id, tags=tags,
                                          description=description, model_id=model_id)
    return str(version.version)


def load_registered(model_uri: str) -> PixelClassifier:
    """The PixelClassifier of a registered model (`models:/NAME/VERSION` or `models:/NAME@alias`;
    its torch model, device and config loaded).

    Every file of the version is downloaded and checked against the manifest Keel recorded at
    registration first (keel.tracking.trust; UntrustedModelError otherwise). Then nothing is unpickled and
    no code from the artifact store runs: the config is JSON, the weights load with
    `weights_only=True`, and the class is this module's, not the pickled python_model.pkl."""
    import yaml

    from keel.tracking.client import client as tracking
    from keel.tracking.trust import verified_model

    client = tracking.client()
    ref = resolve_model(client, model_uri)
    with tempfile.TemporaryDirectory(prefix="keel-model-") as tmp:
        folder = verified_model(client, ref.name, ref.version, Path(tmp))
        flavor = (yaml.safe_load((folder / "MLmodel").read_text()) or {}).get("flavors", {}).get("python_function", {})
        artifacts = {key: (folder / spec["path"]).resolve() for key, spec in (flavor.get("artifacts") or {}).items()}
        if {"weights", "model_config"} - set(artifacts) or any(not p.is_relative_to(folder.resolve()) for p in artifacts.values()):
            raise KeelError(f"model {ref.name} version {ref.version} is not a Keel classifier (its MLmodel names no "
                            "weights and model_config artifacts); score it with the model it was registered for")
        classifier = PixelClassifier()
        classifier.load_context(_Context({key: str(path) for key, path in artifacts.items()}))
    return classifier
