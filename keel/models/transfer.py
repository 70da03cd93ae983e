"""Networks for transfer learning on image folders: a torchvision backbone (or the features of
a Keel-registered image model) with a new classification head.

Pretrained weights come from a local file or the torchvision cache (TORCH_HOME) only: nothing
is downloaded. Without weights the backbone starts from random initialisation.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from keel.core.config import BACKBONES
from keel.core.errors import ConfigError

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
    import torchvision  # heavy: only where a backbone is built

    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}")
    return getattr(torchvision.models, name)(weights=None)


def cached_weights_path(name: str) -> Path | None:
    """Where torchvision would have cached `name`'s ImageNet weights (TORCH_HOME), if there."""
    import torchvision  # heavy: only where a backbone is built

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


@dataclass(frozen=True)
class ParentModel:
    """A registered Keel model, loaded by the caller, whose trained features start a new model."""

    uri: str  # models:/NAME/VERSION or models:/NAME@alias
    network: nn.Module  # the loaded classifier's network
    config: dict  # the model config it was registered with


def transfer_from(parent: ParentModel, n_classes: int, image_size: int) -> tuple[TransferNet, dict]:
    """A TransferNet on a copy of `parent`'s trained features with a new head, and the build
    record of the backbone (what serving needs to rebuild the network)."""
    architecture = parent.config.get("architecture")
    if architecture != "transfer" or not isinstance(parent.network, TransferNet):
        kind = "text" if parent.config.get("input") == "text" else "pixel"
        raise ConfigError(f"{parent.uri} is a {architecture} {kind} model; only image models "
                          "trained by Keel on image folders can serve as backbones")
    network: TransferNet = copy.deepcopy(parent.network).cpu().float()
    net = TransferNet(network.features, network.head.in_features, n_classes, image_size)
    return net, {"backbone": parent.config["build"]["backbone"], "image_size": image_size}


def freeze(model: TransferNet, unfreeze: str | None) -> list[nn.Parameter]:
    """Sets which parameters train and returns them. unfreeze None: only the head; "all":
    everything; "last": the head and the last third of the backbone's parameter tensors (its
    last blocks)."""
    params = list(model.features.parameters())
    cut = {None: len(params), "all": 0, "last": len(params) - max(1, len(params) // 3)}[unfreeze]
    for i, p in enumerate(params):
        p.requires_grad_(i >= cut)
    model.head.requires_grad_(True)
    return [p for p in model.parameters() if p.requires_grad]
