"""The image-folder modality (keel.modalities.base.Modality)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import torch
from torch import nn

from keel.core.config import TEXT_MODELS, DatasetConfig, TrainConfig
from keel.core.io import read_bytes
from keel.data.batches import TensorBatches, load_split, to_float
from keel.data.photos import PhotoBatches, photo_transform
from keel.data.versions import DatasetVersion, class_indices
from keel.models.transfer import ParentModel, build_transfer, transfer_from
from keel.data.imagefolder import (decode, decode_folder, folder_meta, quarantine_table, read_folder, record_split,
                                   with_classes)
from keel.data.neardup import GroupingFeatures, PixelFeatures
from keel.data.splits import plan_split
from keel.data.versions import IngestResult, StoredImages, VersionMeta, existing_version, store_version, version_id
from keel.modalities.base import unfit_model
from keel.modalities.expectations import class_expectations, expectation
from keel.modalities.prepared import Prepared, prepared, refused
from keel.modalities.worst import image_grid


class ImageFolder:
    name = "image-folder"

    # -- read and version
    def ingest(self, config: DatasetConfig, root: Path) -> IngestResult:
        """Reads every file once, quarantines those that cannot serve as training images (with
        the reason), and stores the others resized, split and grouped as a version; a rerun on
        unchanged folders decodes nothing. Classes not in the config are the class folders."""
        config = with_classes(config)
        folder = read_folder(config)
        vid = version_id(config, **folder.version_key(config))
        target, existing = existing_version(root, config, vid)
        if existing:
            return existing
        profile, images = decode_folder(config, folder)
        kept = (profile["status"] == "ok").to_numpy()
        labels = profile.loc[kept, "label"].to_numpy(dtype=np.int64)
        # Near-duplicate groups of the stored photos; a root of class folders is split in whole
        # groups, a split given by folders is kept and checked for near-copies across it.
        plan = plan_split(config, self.grouping_features(images), labels, profile.loc[kept, "split"].to_numpy())
        files = record_split(config, profile, plan)
        meta = VersionMeta.describe(config, vid, **folder_meta(config, folder, profile), **plan.figures(files))
        return store_version(target, meta, profile, StoredImages(images, labels, plan),
                             {"quarantine.csv": quarantine_table(profile)})

    # -- check a row
    def expectations(self, config: DatasetConfig) -> dict[str, list[dict]]:
        """Checks of a version's stored photos (one row each in its profile): the stored
        channels, the photo sizes before resizing, known classes, no photo in two splits, the
        row count, and each class's share near a uniform one."""
        shape, folder, policy = config.image, config.image_folder, config.validation
        rows = [
            expectation("expect_column_values_to_be_in_set", f"every stored image has {shape.channels} channels",
                        "reject", column="channels", value_set=[shape.channels]),
            expectation("expect_column_values_to_be_between",
                        f"photos must be at least {folder.min_side} pixels wide", "reject", column="width", min_value=folder.min_side),
            expectation("expect_column_values_to_be_between",
                        f"photos must be at least {folder.min_side} pixels high", "reject", column="height", min_value=folder.min_side),
            expectation("expect_column_values_to_be_in_set", "labels must be the dataset's classes", "reject",
                        column="label", value_set=list(config.labels)),
            expectation("expect_column_values_to_be_in_set",
                        "no photo may be in two splits (same content in train and evaluation leaks the answer)", "reject",
                        column="duplicate_across_splits", value_set=[False]),
            expectation("expect_table_row_count_to_be_between",
                        f"the dataset must hold {policy.min_rows}-{policy.max_rows} usable photos", "reject",
                        min_value=policy.min_rows, max_value=policy.max_rows),
        ]
        return {"rows": rows, "classes": class_expectations()}

    # -- group near-duplicates
    def grouping_features(self, images: np.ndarray) -> GroupingFeatures:
        """Mean-centred, downsampled pixels of the stored photos, as for pixel tables."""
        return PixelFeatures().grouping(images)

    # -- build a model
    def build_model(self, config: TrainConfig, meta: dict, parent: ParentModel | None = None) -> tuple[nn.Module, dict]:
        """A torchvision backbone `config.model` (with `config.weights`, or the torchvision
        cache's, when there are any), or `parent`'s trained features, with a new head."""
        if not config.transfer or config.model in TEXT_MODELS:
            raise unfit_model(config, meta)
        n_classes = len(meta["labels"])
        if parent is not None:
            network, build = transfer_from(parent, n_classes, config.image_size)
            pretrained = f"registry:{parent.uri}"
        else:
            network, pretrained = build_transfer(config.model, n_classes, config.image_size, config.weights)
            build = {"backbone": config.model, "image_size": config.image_size}
        return network, {"architecture": "transfer", "build": build, "input": "image", "pretrained": pretrained,
                         "image": meta["image"]}

    # -- batch and augment
    def batches(self, version: DatasetVersion, indices: np.ndarray, config: TrainConfig, device: torch.device,
                train: bool, record: dict | None = None) -> PhotoBatches | TensorBatches:
        """Rows `indices`: when `train`, photos augmented one at a time by DataLoader workers
        (keel.data.photos); else as stored, held on the CPU and moved to `device` 128 at a time."""
        if train:
            rows = np.sort(indices)
            targets = class_indices(version.labels()[rows], version.meta["labels"])
            return PhotoBatches(np.asarray(version.images()[rows]), targets, config, device)
        split = load_split(version, indices, torch.device("cpu"))
        return TensorBatches(split.images, split.targets, 128, device,
                             lambda x, _: to_float(x).contiguous(memory_format=torch.channels_last))

    def augment(self, images: torch.Tensor, config: TrainConfig, generator: torch.Generator) -> torch.Tensor:
        """uint8 photos N x C x H x W as float, each augmented as the DataLoader workers do
        (drawn from `generator`; torch's global generator is left as it was)."""
        transform = photo_transform(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            return to_float(torch.stack([transform(image) for image in images]))

    # -- evaluate
    def examples(self, version: DatasetVersion, indices: np.ndarray) -> pd.DataFrame:
        """Stored rows `indices` as their photo files (a `path` column), as a scoring input lists them."""
        profile = version.profile()
        stored_rows = profile[profile["status"] == "ok"].reset_index(drop=True)
        root = version.meta["sources"][0]["path"]
        return pd.DataFrame({"path": [f"{root.rstrip('/')}/{stored_rows['file'][int(r)]}" for r in indices]})

    def model_inputs(self, version: DatasetVersion, indices: np.ndarray, model_config: dict) -> torch.Tensor:
        """Stored rows `indices` (sorted) as uint8 photos N x C x H x W on the CPU, as stored."""
        return load_split(version, indices, torch.device("cpu")).images

    def worst_classified(self, version: DatasetVersion, indices: np.ndarray, probabilities: np.ndarray,
                         class_names: list[str], path: Path) -> list[Path]:
        """A PNG grid of the worst-classified photos (keel.modalities.worst)."""
        return image_grid(version, indices, probabilities, class_names, path)

    # -- preprocess for serving
    def preprocess(self, rows: pd.DataFrame, model_config: dict) -> Prepared:
        """Photo files (a `path` column: local paths or fsspec URLs; a `data` column, when
        there, holds their bytes already read) decoded and resized as ingest stores them; a
        file that does not decode is refused with the reason, what decoding changed is noted."""
        image = model_config["image"]
        if "path" not in rows.columns:
            return refused(len(rows), "path", "no `path` column: send one photo file (local path or URL) per row", image)
        paths = rows["path"].astype(str).tolist()
        blobs = rows["data"] if "data" in rows.columns else (read_bytes(path) for path in paths)  # one at a time
        good = np.zeros(len(paths), dtype=bool)
        pixels, notes, problems = [], [], []
        for i, (path, data) in enumerate(zip(paths, blobs)):
            decoded = decode(data, path, image["height"], image["width"], image["channels"], min_side=1)
            if decoded.pixels is None:
                problems.append((i, "", "", decoded.reason))
                continue
            good[i] = True
            pixels.append(decoded.pixels)
            notes.append(decoded.notes)
        stacked = np.stack(pixels) if pixels else np.zeros((0, image["height"], image["width"], image["channels"]), np.uint8)
        return prepared(stacked, good, problems, notes)


IMAGE_FOLDER = ImageFolder()
