"""Photos augmented one at a time (crop, flip, rotation, colour jitter) in DataLoader worker
processes, as a batch source for fine-tuning (keel.data.batches.BatchSource)."""

from __future__ import annotations

import random
import signal
import threading
from collections.abc import Iterator

import numpy as np
import torch

from keel.core.config import TrainConfig
from keel.data.batches import to_float


def photo_transform(config: TrainConfig):
    """The per-photo augmentation `config.augment` asks for, to `config.image_size` pixels
    (a plain resize when augmentation is off)."""
    from torchvision.transforms import v2  # torchvision: only where photos are augmented

    augment = config.augment
    if not augment.enabled:
        return v2.Resize(config.image_size, antialias=True)
    steps = [v2.RandomResizedCrop(config.image_size, scale=(augment.crop_scale_min, augment.crop_scale_max), antialias=True)]
    if augment.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if augment.rotation_degrees:
        steps.append(v2.RandomRotation(augment.rotation_degrees))
    if augment.brightness or augment.contrast or augment.saturation:
        steps.append(v2.ColorJitter(brightness=augment.brightness, contrast=augment.contrast, saturation=augment.saturation))
    return v2.Compose(steps)


class AugmentedImages(torch.utils.data.Dataset):
    """Stored uint8 photos (N x H x W x C), each augmented when read; draws from torch's global
    generator (a worker's own, seeded per epoch from the DataLoader's generator)."""

    def __init__(self, images: np.ndarray, targets: np.ndarray, config: TrainConfig) -> None:
        self.images, self.targets = images, targets
        self.transform = photo_transform(config)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        image = torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1)
        return self.transform(image), int(self.targets[i])


def seed_worker(worker_id: int) -> None:
    """Runs in each forked worker: seeds numpy and random from torch's per-worker seed, and
    drops the thread-exit hooks inherited from the parent. Prefect's log and event queue
    services register one that fails in a forked child (an AssertionError in their drain,
    Prefect 3.8), which makes every worker exit with code 1 when it finishes and the
    DataLoader report it as a crash; the worker has nothing of the parent's to drain.

    It also ignores SIGTERM and SIGINT, which a terminal's Ctrl-C or a scheduler sends to the
    whole process group: the parent stops its workers itself, and a worker killed first makes
    torch raise "DataLoader worker killed by signal" into the parent's clean-up."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    getattr(threading, "_threading_atexits", []).clear()
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


class PhotoBatches:
    """Augmented photos from `config.workers` DataLoader workers, shuffled by the loader's own
    generator, as float N x C x H x W on `device`; the ragged last batch is dropped.

    Workers are started afresh each epoch (not persistent): each epoch's worker seeds are then
    drawn from the loader's generator, whose state the checkpoint keeps, so a resumed run
    augments and shuffles exactly as the uninterrupted one would have. With no workers the
    photos are augmented in this process, from torch's global generator (also checkpointed).
    """

    def __init__(self, images: np.ndarray, targets: np.ndarray, config: TrainConfig, device: torch.device) -> None:
        self.device = device
        self.generator = torch.Generator().manual_seed(config.seed)
        self.loader = torch.utils.data.DataLoader(
            AugmentedImages(images, targets, config), batch_size=config.batch_size, shuffle=True, drop_last=True,
            num_workers=config.workers, pin_memory=device.type == "cuda", worker_init_fn=seed_worker,
            generator=self.generator)

    def __len__(self) -> int:
        return len(self.loader)

    def epoch(self, generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for images, targets in self.loader:  # the loader shuffles with its own generator
            images = to_float(images.to(self.device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
            yield images, targets.to(self.device, non_blocking=True)

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor | None) -> None:
        if state is not None:
            self.generator.set_state(state)
