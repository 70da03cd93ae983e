"""The course's networks, built from a name and the image shape."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from keel.core.config import BACKBONES
from keel.core.errors import ConfigError
from keel.models.transfer import build_transfer


class Dropout(nn.Module):
    """nn.Dropout with a cheaper random mask on the CPU.

    torch's CPU bernoulli_ draws one 32-bit number per element and took over a quarter of the
    course CNN's training step here. This draws one 64-bit number per four elements and
    compares 16-bit lanes against p (exact to 1/65536). Same distribution, same scaling;
    CUDA uses the fused F.dropout.
    """

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        n = x.numel()
        bits = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)
        lanes = bits.view(torch.int16)[:n]
        if x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last):
            lanes = lanes.as_strided(x.shape, x.stride())  # the mask keeps x's memory format
        else:
            lanes = lanes.view(x.shape)
        keep = lanes >= round(self.p * 65536) - 32768
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"


class ConvBlock(nn.Sequential):
    """The course's block: 3x3 conv, batch-norm, ReLU, dropout, 2x2 max-pool.

    Two equivalences make it cheaper on the CPU without changing what it computes:
    - the course writes Dropout(0) in two blocks; that is the identity, so it is left out
      (a zero dropout still draws a random mask);
    - without dropout in between, ReLU and max-pool commute (both are monotone), so the ReLU
      runs after the pool, on a quarter of the values (~6 % of a training step).
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float):
        layers = [
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(out_channels),
        ]
        if dropout > 0:
            layers += [nn.ReLU(), Dropout(dropout), nn.MaxPool2d(2, stride=2)]
        else:
            layers += [nn.MaxPool2d(2, stride=2), nn.ReLU()]
        super().__init__(*layers)


def mlp(channels: int, height: int, width: int, n_classes: int) -> nn.Module:
    """The course's MNIST dense net: 784-512-512-N."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(channels * height * width, 512),
        nn.ReLU(),
        nn.Linear(512, 512),
        nn.ReLU(),
        nn.Linear(512, n_classes),
    )


def cnn(channels: int, height: int, width: int, n_classes: int, widths=(25, 50, 75)) -> nn.Module:
    """The course's Sign-MNIST CNN: conv 25/50/75 with batch-norm and dropout, then FC-512."""
    a, b, c = widths
    h, w = height // 8, width // 8
    return nn.Sequential(
        ConvBlock(channels, a, 0.0),
        ConvBlock(a, b, 0.2),
        ConvBlock(b, c, 0.0),
        nn.Flatten(),
        nn.Linear(c * h * w, 512),
        Dropout(0.3),
        nn.ReLU(),
        nn.Linear(512, n_classes),
    )


ARCHITECTURES = {
    "mlp": mlp,
    "cnn": cnn,
    # The same network twice as wide: more capacity for datasets harder than Sign-MNIST.
    "cnn-wide": lambda c, h, w, n: cnn(c, h, w, n, widths=(50, 100, 150)),
}


def inference_model(model: nn.Module) -> nn.Module:
    """An eval-mode copy of `model` that computes the same function faster: each conv block's
    batch-norm folded into its convolution (exact up to float rounding), dropout removed, and
    ReLU after max-pool everywhere (they commute once dropout is gone)."""
    model = copy.deepcopy(model).eval()

    def simplify(module: nn.Module) -> nn.Module:
        if isinstance(module, ConvBlock):
            conv, bn = module[0], module[1]
            return nn.Sequential(torch.nn.utils.fuse_conv_bn_eval(conv, bn), nn.MaxPool2d(2, stride=2), nn.ReLU())
        if isinstance(module, (Dropout, nn.Dropout)):
            return nn.Identity()
        return module

    if isinstance(model, nn.Sequential):
        return nn.Sequential(*[simplify(m) for m in model if not isinstance(m, (Dropout, nn.Dropout))]).eval()
    return model


def build_model(name: str, channels: int, height: int, width: int, n_classes: int, **build) -> nn.Module:
    """A freshly initialised network of architecture `name` ("transfer": a torchvision
    backbone and head as `build` describes, without pretrained weights)."""
    if name == "transfer":
        return build_transfer(build["backbone"], n_classes, build["image_size"], weights="none")[0]
    try:
        factory = ARCHITECTURES[name]
    except KeyError:
        raise ConfigError(f"unknown model '{name}'; choose one of {', '.join([*ARCHITECTURES, *BACKBONES])}") from None
    return factory(channels, height, width, n_classes)
