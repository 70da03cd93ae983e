"""Transfer learning on image folders: a torchvision backbone (or a Keel-registered network)
with a new classification head, trained in two phases.

Phase 1 freezes the backbone and trains the head on the backbone's features, computed once
per (dataset version, backbone, weights, image size) and cached, so it costs seconds.
Phase 2 unfreezes the backbone (all of it, or its last blocks) and fine-tunes everything with
a smaller learning rate, on photos that DataLoader worker processes crop, flip, rotate and
colour-jitter. Pretrained weights come from a local file or the torchvision cache
(TORCH_HOME) only: nothing is downloaded. Without weights the backbone starts from random
initialisation; phase 2 then uses the full learning rate (a 10x smaller one would only slow
training from scratch) and the run is tagged so.
"""

from __future__ import annotations

import copy
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from keel.core import settings
from keel.core.config import BACKBONES, TrainConfig
from keel.data.datasets import DatasetVersion, class_indices, group_holdout
from keel.core.errors import ConfigError
from keel.core.io import atomic_path
from keel.training.train import TrainResult

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class TransferNet(nn.Module):
    """Float images in [0, 1] at any size -> resized to `image_size`, ImageNet-normalised ->
    backbone features -> a linear head."""

    def __init__(self, features: nn.Module, in_features: int, n_classes: int, image_size: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.features = features
        self.head = nn.Linear(in_features, n_classes)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True,
                              align_corners=False)
        return (x - self.mean) / self.std

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.prepare(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(x))


def _cut_head(network: nn.Module) -> int:
    """Replaces the last Linear layer of `network` by the identity; returns its input width."""
    last = None
    for name, module in network.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError("the backbone has no linear classification layer to replace")
    in_features = network.get_submodule(last).in_features
    parent_name, _, leaf = last.rpartition(".")
    setattr(network.get_submodule(parent_name), leaf, nn.Identity())  # setattr also replaces Sequential items ("6")
    return in_features


def torchvision_backbone(name: str) -> nn.Module:
    import torchvision

    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
    return getattr(torchvision.models, name)(weights=None)


def cached_weights_path(name: str) -> Path | None:
    """Where torchvision would have cached `name`'s ImageNet weights (TORCH_HOME), if there."""
    import torchvision

    url = torchvision.models.get_model_weights(name).DEFAULT.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    return path if path.exists() else None


def pretrained_weights(name: str, weights: str | None) -> tuple[dict | None, str]:
    """(state dict, where it came from): `weights` (a local file), else the torchvision cache,
    else (None, "none"). Never downloads."""
    path = Path(weights) if weights else cached_weights_path(name)
    if path is None:
        return None, "none"
    if not path.exists():
        raise ConfigError(f"{path}: weights file not found; pass a local .pth file or leave --weights out")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, EOFError, RuntimeError (zip) ... with pages of advice
        state, reason = None, "the file is empty" if path.stat().st_size == 0 else type(exc).__name__
    else:
        reason = f"it holds a {type(state).__name__}, not a dict of tensors"
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: not a PyTorch weights file ({reason}); pass a .pth state dict of {name} "
                          "(torch.save(model.state_dict(), path)) with --weights, or --weights none to start from scratch")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    return state, f"{'file' if weights else 'torch-cache'}:{path.name}@{digest}"


def build_transfer(backbone: str, n_classes: int, image_size: int, weights: str | None = None) -> tuple[TransferNet, str]:
    """A TransferNet on a torchvision backbone, with pretrained weights when there are any."""
    network = torchvision_backbone(backbone)
    state, source = pretrained_weights(backbone, weights) if weights != "none" else (None, "none")
    if state is not None:
        try:
            network.load_state_dict(state)
        except RuntimeError:
            raise ConfigError(f"{weights or cached_weights_path(backbone)}: these weights do not fit {backbone} "
                              f"({_misfit(network.state_dict(), state)}); pass weights saved from a {backbone} with "
                              "--weights, or --weights none to start from scratch") from None
    in_features = _cut_head(network)
    return TransferNet(network, in_features, n_classes, image_size), source


def _misfit(expected: dict, given: dict) -> str:
    """How a state dict differs from the one a network expects, counted."""
    missing = sum(key not in given for key in expected)
    unknown = sum(key not in expected for key in given)
    reshaped = sum(key in given and tuple(getattr(given[key], "shape", ())) != tuple(value.shape)
                   for key, value in expected.items())
    return f"{missing} of its {len(expected)} tensors missing, {unknown} unknown, {reshaped} of another shape"


def from_registered(model_uri: str, n_classes: int, image_size: int) -> tuple[TransferNet, dict]:
    """A Keel-registered image model as the backbone: its trained features, a new head."""
    from keel.tracking.registry import load_registered

    classifier = load_registered(model_uri)
    if classifier.config.get("architecture") != "transfer":
        raise ConfigError(f"{model_uri} is a {classifier.config.get('architecture')} pixel model; only image models "
                          "trained by Keel on image folders can serve as backbones")
    parent: TransferNet = copy.deepcopy(classifier.model).cpu().float()
    net = TransferNet(parent.features, parent.head.in_features, n_classes, image_size)
    return net, classifier.config["build"]


# --------------------------------------------------------------------------- data


class AugmentedImages(torch.utils.data.Dataset):
    """Stored uint8 photos, cropped, flipped, rotated and colour-jittered per sample (in the
    DataLoader's worker processes)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, config: TrainConfig) -> None:
        from torchvision.transforms import v2

        self.images, self.targets = images, targets
        augment = config.augment
        steps = [v2.RandomResizedCrop(config.image_size, scale=(augment.crop_scale_min, augment.crop_scale_max),
                                      antialias=True)]
        if augment.horizontal_flip:
            steps.append(v2.RandomHorizontalFlip())
        if augment.rotation_degrees:
            steps.append(v2.RandomRotation(augment.rotation_degrees))
        if augment.brightness or augment.contrast or augment.saturation:
            steps.append(v2.ColorJitter(brightness=augment.brightness, contrast=augment.contrast,
                                        saturation=augment.saturation))
        self.transform = v2.Compose(steps) if augment.enabled else v2.Resize(config.image_size, antialias=True)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        image = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)
        return self.transform(image), int(self.targets[i])


def _seed_worker(worker_id: int) -> None:
    """Runs in each forked worker: seeds numpy and random from torch's per-worker seed, and
    drops the thread-exit hooks inherited from the parent. Prefect's log and event queue
    services register one that fails in a forked child (an AssertionError in their drain,
    Prefect 3.8), which makes every worker exit with code 1 when it finishes and the
    DataLoader report it as a crash; the worker has nothing of the parent's to drain."""
    import random
    import threading

    getattr(threading, "_threading_atexits", []).clear()

    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def loader(images: np.ndarray, targets: np.ndarray, config: TrainConfig, device: torch.device, seed: int):
    generator = torch.Generator().manual_seed(seed)
    workers = config.workers
    return torch.utils.data.DataLoader(
        AugmentedImages(images, targets, config), batch_size=config.batch_size, shuffle=True, drop_last=True,
        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
        worker_init_fn=_seed_worker, generator=generator)


# --------------------------------------------------------------------------- training


@dataclass(kw_only=True)  # after TrainResult's fields with defaults
class TransferResult(TrainResult):
    pretrained: str
    build: dict
    feature_cache: str
    phase_boundary: int  # the last epoch of phase 1


def feature_cache_path(version: DatasetVersion, build: dict, indices: np.ndarray) -> Path:
    key = hashlib.sha256(repr((version.id, build, indices.tobytes())).encode()).hexdigest()[:16]
    return settings.home() / "data" / "features" / version.name / f"{key}.pt"


@torch.no_grad()
def cached_features(model: TransferNet, version: DatasetVersion, indices: np.ndarray, build: dict,
                    device: torch.device, precision: str) -> tuple[torch.Tensor, Path]:
    """The frozen backbone's features of rows `indices` (no augmentation), computed once, and
    the file they are cached in."""
    from keel.training.train import autocast, to_float

    path = feature_cache_path(version, build, indices)
    if path.exists():
        return torch.load(path, map_location=device, weights_only=True), path
    model.eval()
    images = version.images()
    out = []
    for start in range(0, len(indices), 128):
        batch = torch.from_numpy(np.asarray(images[indices[start:start + 128]])).permute(0, 3, 1, 2)
        with autocast(device, precision):
            out.append(model.embed(to_float(batch.to(device)).contiguous(memory_format=torch.channels_last)).float())
    features = torch.cat(out)
    with atomic_path(path) as tmp:
        torch.save(features.cpu(), tmp)
    return features, path


def _freeze(model: TransferNet, unfreeze: str | None) -> None:
    """unfreeze None: only the head trains; "all": everything; "last": the head and the last
    third of the backbone's parameter tensors (its last blocks)."""
    params = list(model.features.parameters())
    cut = {None: len(params), "all": 0, "last": len(params) - max(1, len(params) // 3)}[unfreeze]
    for i, p in enumerate(params):
        p.requires_grad_(i >= cut)


def fit_transfer(version: DatasetVersion, config: TrainConfig, device: torch.device, checkpoint_path: Path,
                 on_epoch_end=None) -> TransferResult:
    from keel.training.train import autocast, predict_logits, select_precision, to_float

    precision = select_precision(config.precision, device)
    torch.manual_seed(config.seed)
    n_classes = len(version.meta["labels"])
    if config.backbone:
        model, parent_build = from_registered(config.backbone, n_classes, config.image_size)
        pretrained = f"registry:{config.backbone}"
        build = {"backbone": parent_build["backbone"], "image_size": config.image_size}
    else:
        model, pretrained = build_transfer(config.model, n_classes, config.image_size, config.weights)
        build = {"backbone": config.model, "image_size": config.image_size}
    model = model.to(device).to(memory_format=torch.channels_last)

    train_idx = version.indices("train")
    labels = version.labels()
    val_pos = group_holdout(version, train_idx, config.validation_fraction, config.seed)
    fit_idx, val_idx = np.sort(np.delete(train_idx, val_pos)), np.sort(train_idx[val_pos])
    targets = torch.from_numpy(class_indices(labels, version.meta["labels"]))
    val_images = torch.from_numpy(np.asarray(version.images()[val_idx])).permute(0, 3, 1, 2).contiguous()
    val_targets = targets[val_idx].to(device)

    state = {"phase": 1, "epoch": 0, "history": [], "best_score": (-1.0, 0.0), "best_epoch": 0, "best_state": None,
             "bad_epochs": 0, "stopped_early": False, "train_seconds": 0.0, "loop_seconds": 0.0}
    resumed_from = 0
    saved = torch.load(checkpoint_path, map_location=device, weights_only=False) if Path(checkpoint_path).exists() else None
    if saved is not None:
        model.load_state_dict(saved["model"])
        state = saved["state"]
        resumed_from = state["epoch"]
    loop_started = time.perf_counter()

    def evaluate() -> tuple[float, float]:
        logits = predict_logits(model, val_images, device, precision, batch_size=128)
        return F.cross_entropy(logits, val_targets).item(), (logits.argmax(1) == val_targets).float().mean().item()

    def finish_epoch(metrics: dict, optimizer, scheduler) -> None:
        epoch = state["epoch"] = state["epoch"] + 1
        state["history"].append({"epoch": epoch, "phase": state["phase"], **metrics})
        score = (metrics["val_accuracy"], -metrics["val_loss"])
        if score > tuple(state["best_score"]):
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0, best_state=copy.deepcopy(model.state_dict()))
        elif state["phase"] == 2:
            state["bad_epochs"] += 1
            state["stopped_early"] = state["bad_epochs"] >= config.patience
        with atomic_path(Path(checkpoint_path)) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict() if scheduler is not None else None, "state": state}, tmp)
        if on_epoch_end is not None:
            on_epoch_end(epoch, {"phase": state["phase"], **metrics}, model)

    # Phase 1: the head alone, on cached features of the frozen backbone.
    feature_cache = ""
    if state["phase"] == 1 and config.head_epochs > 0:
        _freeze(model, None)
        features, cache = cached_features(model, version, fit_idx, build | {"pretrained": pretrained}, device, precision)
        feature_cache = str(cache)
        fit_targets = targets[fit_idx].to(device)
        optimizer = torch.optim.AdamW(model.head.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        generator = torch.Generator().manual_seed(config.seed)
        while state["epoch"] < config.head_epochs:
            started = time.perf_counter()
            model.head.train()
            order = torch.randperm(len(features), generator=generator)
            total = 0.0
            for start in range(0, len(order), config.batch_size):
                idx = order[start:start + config.batch_size]
                loss = F.cross_entropy(model.head(features[idx]), fit_targets[idx], label_smoothing=0.1)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(idx)
            seconds = time.perf_counter() - started
            state["train_seconds"] += seconds
            val_loss, val_accuracy = evaluate()
            finish_epoch({"train_loss": total / len(order), "val_loss": val_loss, "val_accuracy": val_accuracy,
                          "learning_rate": config.learning_rate, "epoch_seconds": seconds}, optimizer, None)
    if state["phase"] == 1:
        state["phase"] = 2
        state["phase_boundary"] = state["epoch"]
        state["bad_epochs"] = 0

    # Phase 2: unfreeze and fine-tune on augmented photos.
    factor = config.fine_tune_lr_factor if config.fine_tune_lr_factor is not None else (1.0 if pretrained == "none" else 0.1)
    _freeze(model, config.unfreeze)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate * factor, weight_decay=config.weight_decay)
    data = loader(version.images()[fit_idx], targets[fit_idx].numpy(), config, device, config.seed)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.learning_rate * factor,
                                                    epochs=config.epochs, steps_per_epoch=max(1, len(data)))
    done_in_phase2 = state["epoch"] - state["phase_boundary"]
    if saved is not None and saved.get("optimizer") and saved["state"]["phase"] == 2 and done_in_phase2 > 0:
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
    while done_in_phase2 < config.epochs and not state["stopped_early"]:
        started = time.perf_counter()
        model.train()
        total, correct, seen = 0.0, 0, 0
        for images, batch_targets in data:
            images = to_float(images.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
            batch_targets = batch_targets.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(images)
                loss = F.cross_entropy(logits.float(), batch_targets, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(batch_targets)
            correct += int((logits.argmax(1) == batch_targets).sum())
            seen += len(batch_targets)
        seconds = time.perf_counter() - started
        state["train_seconds"] += seconds
        val_loss, val_accuracy = evaluate()
        finish_epoch({"train_loss": total / max(1, seen), "train_accuracy": correct / max(1, seen), "val_loss": val_loss,
                      "val_accuracy": val_accuracy, "learning_rate": scheduler.get_last_lr()[0], "epoch_seconds": seconds,
                      "images_per_second": seen / seconds}, optimizer, scheduler)
        done_in_phase2 += 1

    state["loop_seconds"] += time.perf_counter() - loop_started
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    for p in model.parameters():
        p.requires_grad_(True)
    return TransferResult(
        model=model, history=state["history"], best_epoch=state["best_epoch"], epochs_run=state["epoch"],
        stopped_early=state["stopped_early"], train_seconds=state["train_seconds"], loop_seconds=state["loop_seconds"],
        resumed_from_epoch=resumed_from, device=str(device), precision=precision, pretrained=pretrained,
        build=build, feature_cache=feature_cache, phase_boundary=state["phase_boundary"])
