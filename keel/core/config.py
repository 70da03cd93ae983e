"""Configuration models: datasets (YAML files under conf/datasets) and training runs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from keel.core.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SourceFile(_Strict):
    """One input file (local path or fsspec URL); IDX sources also name their labels file."""

    path: str
    sha256: str | None = None
    labels_path: str | None = None
    labels_sha256: str | None = None
    # default: the dataset's format; a text dataset's files by their suffix (.csv, .csv.gz,
    # .parquet, .jsonl, .jsonl.gz)
    format: Literal["csv", "idx", "parquet", "jsonl"] | None = None


class ImageShape(_Strict):
    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: int = Field(default=1, gt=0)

    @property
    def n_pixels(self) -> int:
        return self.height * self.width * self.channels


class EvaluationSplit(_Strict):
    """The held-out rows that training never sees; fixed by method, fraction and seed.

    - ``group`` (default): whole near-duplicate groups go to one side -- rows whose
      mean-centred pixels have cosine similarity >= ``threshold`` are joined, and the groups
      are the connected components (keel/data/neardup.py); with ``group_column`` set, its values
      are the groups instead. Stratified by class.
    - ``column``: the groups are the values of the dataset's ``group_column`` (e.g. signer).
    - ``random``: stratified random rows. Near-copies of evaluation rows then sit in training
      and the leakage check says so.
    A file-based split (a ``test:`` file, an image folder's valid/) stays as configured and is
    checked for leaks. The early-stopping slice carved from training follows the same groups.
    """

    by: Literal["group", "random", "column"] = "group"
    fraction: float = Field(default=0.15, gt=0.0, lt=0.5)
    seed: int = 0
    # Near-duplicate threshold: cosine similarity of mean-centred pixels (downsampled to at
    # most 32 pixels a side). At 0.97 Sign-MNIST's 27,455 rows form 1,229 groups of one label.
    threshold: float = Field(default=0.97, gt=0.0, le=1.0)
    # Also join rows that match after shifting one by up to this many pixels (a 1-pixel shift
    # of a Sign-MNIST image has cosine ~0.8 unshifted). Costs several times the grouping time at 1
    # (docs/benchmarks.md).
    max_shift: int = Field(default=0, ge=0, le=2)


class ValidationPolicy(_Strict):
    """Bounds the Great Expectations suite checks besides the schema, and when an incoming
    batch as a whole is rejected (rather than cleaned by quarantining rows)."""

    min_rows: int = Field(default=1, ge=0)
    max_rows: int = Field(default=10_000_000, gt=0)
    # Without an inferred suite: a class's share of the rows, relative to a uniform share.
    min_class_share: float = Field(default=0.25, ge=0.0)
    max_class_share: float = Field(default=4.0, gt=0.0)
    # Incoming batches: reject when more than this fraction of rows is quarantined ...
    max_quarantined_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    # ... or a class expected in a batch of its size is missing, or a class's share is out of
    # its tolerance, or the labels or image statistics drifted past the suite's thresholds.
    reject_on_missing_class: bool = True
    reject_on_class_share: bool = True
    reject_on_drift: bool = True
    # Leakage (evaluation rows with a near-copy in training): flagged above this share of the
    # evaluation rows; the training flow stops on it only with stop_on_leak.
    max_leaked_fraction: float = Field(default=0.05, ge=0.0, le=1.0)
    stop_on_leak: bool = False


class ImageFolderOptions(_Strict):
    """How an image folder is read: `root/<split>/<class>/*` (split folders named in `splits`),
    or `root/<class>/*` split by the evaluation-split rule."""

    root: str
    # Keel split -> folder name under root; empty: the folder names train, valid/validation/val
    # and test are recognised, and a root of class folders alone is split by evaluation_split.
    splits: dict[Literal["train", "evaluation", "test"], str] = Field(default_factory=dict)
    # Smaller images (e.g. 1x1 tracking pixels) are quarantined.
    min_side: int = Field(default=16, ge=1)


class TextOptions(_Strict):
    """How a text dataset's rows are checked and tokenized (format text)."""

    # Longer texts are quarantined at ingest (a pasted log file is not a message); scoring
    # truncates them to the model's max_length and flags them instead.
    max_characters: int = Field(default=20_000, gt=0)
    # The WordPiece vocabulary trained on the training split (never on evaluation rows) for
    # models trained from scratch (bert-tiny); pretrained encoders keep their own.
    vocab_size: int = Field(default=8000, ge=100, le=100_000)
    lowercase: bool = True
    # Near-duplicate groups: texts whose sets of word n-grams (1..ngram_words words, hashed)
    # have a cosine similarity of at least evaluation_split.threshold are joined, through the
    # same nearest-neighbour index as images (keel/data/textdups.py).
    ngram_words: int = Field(default=3, ge=1, le=8)


class DatasetConfig(_Strict):
    """A dataset described in YAML: where the files are and what the rows mean."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    format: Literal["csv", "idx", "parquet", "image-folder", "text"]
    train: list[SourceFile] = Field(default_factory=list)
    test: list[SourceFile] = Field(default_factory=list)
    # For format image-folder: where the photos are. `image` is then the stored size (each
    # photo's shorter side is resized to it and the centre cropped).
    image_folder: ImageFolderOptions | None = None
    # Pixel tables and image folders: the image shape (image folders: the stored size). Text: none.
    image: ImageShape | None = None
    label_column: str = "label"
    # Text datasets: the column of the texts, and an optional column of stable row ids.
    text_column: str = "text"
    id_column: str | None = None
    text: TextOptions = Field(default_factory=TextOptions)
    pixel_prefix: str = "pixel"
    # A column whose values group rows that must stay on one side of the split (the signer,
    # the patient, the session). Used instead of near-duplicate groups when set.
    group_column: str | None = None
    # Raw label value -> class name. A list means labels 0..N-1 in order. Image folders:
    # inferred from the class folders' names (sorted) when the folder is read, unless given.
    # Text: a file's label values are class names (or their raw values); without `classes`,
    # the training files' distinct labels (sorted) are the classes, read at ingest.
    classes: dict[int, str] = Field(default_factory=dict)
    evaluation_split: EvaluationSplit = Field(default_factory=EvaluationSplit)
    validation: ValidationPolicy = Field(default_factory=ValidationPolicy)
    # The expectation suite inferred from the reference by `keel validate profile` (JSON, under
    # conf/expectations); without one, a suite of structural checks is built from this config.
    expectations: str | None = None
    description: str = ""
    # Training settings `keel train` uses for this dataset unless its options say otherwise
    # (any TrainConfig field, e.g. model, epochs, image_size, augment).
    training: dict = Field(default_factory=dict)

    # Where relative paths are resolved: the YAML file's folder (set by load_dataset_config).
    base_dir: str = Field(default=".", exclude=True)
    # The YAML file itself, for messages that name it (set by load_dataset_config).
    config_path: str = Field(default="", exclude=True)

    @field_validator("classes", mode="before")
    @classmethod
    def _classes_from_list(cls, value):
        if isinstance(value, list):
            return {i: str(name) for i, name in enumerate(value)}
        return value

    @model_validator(mode="after")
    def _check(self) -> DatasetConfig:
        if self.format == "image-folder":
            if self.image_folder is None:
                raise ValueError("image_folder: format image-folder needs image_folder: {root: PATH}")
        elif not self.train:
            raise ValueError("train: list at least one source file")
        if self.image is None and self.format != "text":
            raise ValueError(f"image: format {self.format} needs image: {{height: H, width: W, channels: C}}")
        if self.format == "text" and self.text_column in (self.label_column, self.group_column, self.id_column):
            raise ValueError("text_column: must differ from the label, group and id columns")
        if self.evaluation_split.by == "column" and not self.group_column:
            raise ValueError("evaluation_split.by: 'column' needs group_column (the column whose values are the groups)")
        if self.group_column and self.format in ("image-folder", "idx"):
            raise ValueError(f"group_column: {self.format} datasets have no columns; remove group_column "
                             "(near-duplicate groups are used)")
        if self.group_column is not None and self.group_column == self.label_column:
            raise ValueError("group_column: must not be the label column")
        # An image folder without `classes` learns them from its class folders when it is read
        # (keel.data.imagefolder.with_classes): loading a config touches no other file.
        if len(self.classes) < 2 and (self.classes or self.format not in ("image-folder", "text")):
            raise ValueError("classes: a classifier needs at least two classes")
        if len(set(self.classes.values())) != len(self.classes):
            raise ValueError("classes: class names must be unique")
        for source in [*self.train, *self.test]:
            if (source.format or self.format) == "idx" and not source.labels_path:
                raise ValueError(f"{source.path}: IDX sources need labels_path (the labels file)")
        return self

    def with_classes(self, names: list[str]) -> DatasetConfig:
        """This config with classes `names` (labels 0..N-1), e.g. an image folder's class folders."""
        return self.model_copy(update={"classes": dict(enumerate(names))})

    @property
    def labels(self) -> list[int]:
        """Raw label values in class-index order."""
        return sorted(self.classes)

    @property
    def class_names(self) -> list[str]:
        return [self.classes[label] for label in self.labels]

    @property
    def pixel_columns(self) -> list[str]:
        return [f"{self.pixel_prefix}{i}" for i in range(1, self.image.n_pixels + 1)]

    @property
    def expected_columns(self) -> list[str]:
        """The columns of a training file: label, the group column (when set), pixels."""
        return [self.label_column, *([self.group_column] if self.group_column else []), *self.pixel_columns]

    @property
    def where(self) -> str:
        """How messages name this config: its file, else its dataset name."""
        return self.config_path or f"dataset config {self.name}"

    def resolve(self, path: str) -> str:
        """An absolute path or URL for a path written in the YAML file."""
        if "://" in path or Path(path).is_absolute():
            return path
        return str((Path(self.base_dir) / path).resolve())


def load_dataset_config(path: str | Path) -> DatasetConfig:
    """The DatasetConfig in a YAML file; relative data paths resolve against the file's folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"dataset config {path} does not exist; pass the path of a YAML file such as conf/datasets/sign-mnist.yaml") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"dataset config {path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"dataset config {path} must be a YAML mapping (name:, format:, train:, ...)")
    try:
        return DatasetConfig(**raw, base_dir=str(path.resolve().parent), config_path=str(path))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top level)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"dataset config {path} is invalid: {problems}") from None


class AugmentConfig(_Strict):
    """Batched augmentation on the training device. The defaults (rotation ±10°, zoom 0.9-1.1,
    shift ±10 %, brightness ±0.2, contrast ±0.5, no flip) mimic new photos of new signers: on a
    group split of Sign-MNIST they beat the course's rotation ±5° and crop 0.9-1.0 (docs/benchmarks.md), and
    suit other 28x28 sets (MNIST). Image folders use the crop, rotation, jitter and flip fields."""

    enabled: bool = True
    rotation_degrees: float = Field(default=10.0, ge=0.0, le=180.0)
    # RandomResizedCrop's area range (zoom in only); off by default in favour of scale_min/max.
    crop_scale_min: float = Field(default=1.0, gt=0.0, le=1.0)
    crop_scale_max: float = Field(default=1.0, gt=0.0, le=1.0)
    brightness: float = Field(default=0.2, ge=0.0, lt=1.0)
    contrast: float = Field(default=0.5, ge=0.0, lt=1.0)
    horizontal_flip: bool = False  # off: in sign language handedness carries meaning
    saturation: float = Field(default=0.0, ge=0.0, lt=1.0)  # photos (image folders) only
    # Pixel tables only (keel/data/augment.py), in the same affine grid as rotation and crop:
    translate: float = Field(default=0.1, ge=0.0, lt=0.5)  # shift up to this fraction of the side, each axis
    scale_min: float = Field(default=0.9, gt=0.0, le=4.0)  # zoom of the content: < 1 zooms out, > 1 zooms in
    scale_max: float = Field(default=1.1, gt=0.0, le=4.0)
    shear_degrees: float = Field(default=0.0, ge=0.0, le=45.0)

    @model_validator(mode="after")
    def _check(self) -> AugmentConfig:
        if self.crop_scale_min > self.crop_scale_max:
            raise ValueError("crop_scale_min must not exceed crop_scale_max")
        if self.scale_min > self.scale_max:
            raise ValueError("scale_min must not exceed scale_max")
        return self


# The course's networks for pixel tables, the torchvision backbones for image folders, and the
# BERT-family encoders for text (minilm: the pretrained all-MiniLM-L6-v2; bert-tiny: a small
# BERT trained from scratch).
PIXEL_MODELS = ("cnn", "mlp", "cnn-wide")
BACKBONES = ("vgg16", "resnet18", "mobilenet_v3_small", "efficientnet_b0")
TEXT_MODELS = ("minilm", "bert-tiny")


class TrainConfig(_Strict):
    """Everything that decides a training run; its hash keys checkpoints for resuming."""

    # cnn, mlp, cnn-wide: the course's networks for pixel tables. vgg16, resnet18,
    # mobilenet_v3_small, efficientnet_b0: torchvision backbones with a new head, trained in two
    # phases on image folders (keel/training/transfer.py).
    model: Literal[PIXEL_MODELS + BACKBONES + TEXT_MODELS] = Field(
        default="cnn", description="architecture: cnn, mlp or cnn-wide for pixel tables; a torchvision backbone for image "
        "folders; minilm or bert-tiny for text")
    # Pixel tables: the upper bound; the time budget plans how many of them fit.
    epochs: int = Field(default=40, ge=1, description="at most this many epochs; the time budget may plan fewer "
                        "(image folders: phase 2 epochs, no budget)")
    # Pixel tables: seconds for the epochs' training and validation passes; None or 0: no budget.
    # Timed warm-up steps plan min(epochs, budget / seconds per epoch) epochs and the schedule
    # spans those; a run that falls behind stops after the epoch that passes the budget.
    time_budget: float | None = Field(default=120.0, ge=0.0, description="pixel tables: seconds for the epoch loop; the "
                                      "schedule spans the epochs that fit (0: no budget)")
    # 128: twice the steps of 256 in the same time; on a Sign-MNIST group split and on MNIST it
    # scored a little higher within the 120 s budget (docs/benchmarks.md).
    batch_size: int = Field(default=128, ge=1, description="examples per training step")
    learning_rate: float = Field(default=3e-3, gt=0.0, description="peak learning rate of the one-cycle schedule")
    weight_decay: float = Field(default=1e-4, ge=0.0, description="AdamW weight decay")
    label_smoothing: float = Field(default=0.0, ge=0.0, lt=1.0,  # 0.1 did not help on Sign-MNIST
                                   description="label smoothing of the training loss")
    # Early stopping watches accuracy on a validation slice carved from the training rows. The
    # patience is long: while the one-cycle rate is high, validation accuracy on a slice of
    # ~100 near-copy groups wobbles for epochs, and stopping then loses the annealed epochs
    # (Sign-MNIST group split: patience 5 stopped at epoch 10-12 of 21-31, 0.96-0.98 vs 0.99+).
    validation_fraction: float = Field(default=0.1, gt=0.0, lt=0.5, description="share of the training rows (whole "
                                       "groups) held out to watch for early stopping")
    patience: int = Field(default=10, ge=1, description="epochs without validation improvement before stopping")
    seed: int = Field(default=0, description="seed of the initial weights, the shuffling and the augmentation")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: a GPU when there is one")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        default="auto", description="auto: bf16 autocast on GPUs and on CPUs with bf16 instructions")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    # Transfer learning (image folders). `epochs` counts phase 2 (fine-tuning) epochs.
    backbone: str | None = Field(default=None, pattern=r"^models:/.+", description="image folders: a Keel-registered "
                                 "image model as the backbone, models:/NAME@alias")
    weights: str | None = Field(default=None, description="image folders: pretrained weights file for the backbone "
                                "(default: the torchvision cache under TORCH_HOME when it holds them; 'none': never)")
    image_size: int = Field(default=96, ge=32, description="image folders: training crop size in pixels")
    head_epochs: int = Field(default=3, ge=0, description="image folders: phase 1 epochs (frozen backbone, head only, "
                             "on cached features)")
    fine_tune_lr_factor: float | None = Field(default=None, gt=0.0, description="image folders: phase 2 learning rate = "
                                              "learning rate x this (default 0.1; 1 without pretrained weights)")
    unfreeze: Literal["all", "last"] = Field(default="all", description="image folders: what phase 2 trains")
    workers: int = Field(default=1, ge=0, description="image folders: DataLoader worker processes that augment the photos")
    # Text. Longer texts are truncated to this many tokens (training, evaluation and scoring).
    max_length: int = Field(default=128, ge=8, le=512, description="text: tokens per text (longer ones are truncated)")

    @property
    def transfer(self) -> bool:
        return self.model in BACKBONES or self.backbone is not None
