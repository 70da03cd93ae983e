"""Batched, on-device versions of the course's Sign-MNIST augmentation.

The course applies torchvision transforms one image at a time inside a Dataset. Here one
affine grid per batch does rotation and resized crop together, and the colour jitter is two
broadcast multiplies, so a batch of 256 costs about as much as one image did.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from keel.core.config import AugmentConfig


def augment_batch(images: torch.Tensor, config: AugmentConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomly rotated, cropped, shifted, zoomed, sheared, (flipped,) brightness- and
    contrast-jittered copies of `images`.

    `images` is float N x C x H x W in [0, 1] on any device; the result has the same shape.
    """
    if not config.enabled:
        return images
    n = images.shape[0]
    device, dtype = images.device, images.dtype

    def uniform(low: float, high: float) -> torch.Tensor:
        return torch.rand(n, device=device, generator=generator, dtype=dtype) * (high - low) + low

    # RandomRotation(degrees) + RandomResizedCrop(scale, ratio=1): the crop keeps `area` of the
    # image, i.e. a side of sqrt(area), placed anywhere inside the frame.
    angle = uniform(-config.rotation_degrees, config.rotation_degrees) * (math.pi / 180)
    side = uniform(config.crop_scale_min, config.crop_scale_max).sqrt()
    shift_x = uniform(-1, 1) * (1 - side)
    shift_y = uniform(-1, 1) * (1 - side)
    flip = torch.ones(n, device=device, dtype=dtype)
    if config.horizontal_flip:
        flip = torch.where(torch.rand(n, device=device, generator=generator) < 0.5, -flip, flip)
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    # RandomAffine(translate, scale, shear) on top, drawn only when asked for (the draws
    # advance the generator): the grid maps output to input coordinates, so the content
    # grows by `zoom` when the grid shrinks by it, and a shift of `t` of the side is 2t in
    # the grid's [-1, 1] coordinates.
    if config.scale_min != 1.0 or config.scale_max != 1.0:
        zoom = uniform(config.scale_min, config.scale_max)
        cos, sin = cos / zoom, sin / zoom
    shear = torch.zeros(n, device=device, dtype=dtype)
    if config.shear_degrees:
        shear = torch.tan(uniform(-config.shear_degrees, config.shear_degrees) * (math.pi / 180))
    if config.translate:
        shift_x = shift_x + uniform(-2 * config.translate, 2 * config.translate)
        shift_y = shift_y + uniform(-2 * config.translate, 2 * config.translate)
    # [[cos, -sin], [sin, cos]] @ [[1, shear], [0, 1]], the x column flipped.
    theta = torch.stack([
        torch.stack([cos * flip, cos * shear - sin, shift_x], dim=1),
        torch.stack([sin * flip, sin * shear + cos, shift_y], dim=1),
    ], dim=1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    # ColorJitter(brightness, contrast): scale, then blend towards each image's mean grey.
    shape = (n, 1, 1, 1)
    brightness = uniform(1 - config.brightness, 1 + config.brightness).view(shape)
    contrast = uniform(1 - config.contrast, 1 + config.contrast).view(shape)
    out = out * brightness
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean
    return out.clamp_(0.0, 1.0)
