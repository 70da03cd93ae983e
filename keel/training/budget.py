"""The time budget: how long an epoch will take, timed on a copy of the model, and how many
epochs fit."""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn

from keel.core.config import TrainConfig
from keel.data.batches import BatchSource
from keel.models.device import autocast, synchronize
from keel.training.phases import Phase, loop_generator, make_optimizer, train_step

ESTIMATE_MARGIN = 1.15


def _endless(source: BatchSource, generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yielded = False
        for batch in source.epoch(generator):
            yielded = True
            yield batch
        if not yielded:
            return


@torch.no_grad()
def _validation_seconds(model: nn.Module, validation: BatchSource, device: torch.device, precision: str) -> float:
    """Seconds a validation pass takes: one batch timed after a warm-up, times the batches."""
    model.eval()
    inputs = next(iter(validation.epoch(None)), (None,))[0]
    if inputs is None:
        return 0.0

    def once() -> float:
        synchronize(device)
        started = time.perf_counter()
        with autocast(device, precision):
            model(inputs)
        synchronize(device)
        return time.perf_counter() - started

    once()  # the first call picks and compiles kernels
    return once() * len(validation)


def estimate_epoch_seconds(model: nn.Module, phase: Phase, source: BatchSource, validation: BatchSource,
                           config: TrainConfig, device: torch.device, precision: str, warmup: int = 3,
                           windows: int = 5, steps_per_window: int = 3) -> float:
    """Seconds one epoch of `phase` (training pass and validation pass) should take, from a few
    timed training steps and one timed validation batch on a copy of `model`.

    Both passes are warmed up first (the first calls pick and compile kernels: timing them
    planned 7 MNIST epochs where 10 fitted), and the step time is the median of a few short
    windows, so a moment of contention does not decide the plan. The model, its optimizer and
    every random generator the loop uses (the batch source's own too) are left as they were,
    so a run with a budget draws the same numbers as one without."""
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    source_rng = source.get_state()
    try:
        probe = copy.deepcopy(model)
        probe.train()
        optimizer = make_optimizer(phase, probe, config.weight_decay)
        batches = _endless(source, loop_generator(device, config.seed + 1))

        def steps(count: int) -> float:
            synchronize(device)
            started = time.perf_counter()
            for _ in range(count):
                inputs, targets = next(batches)
                train_step(probe, phase, optimizer, inputs, targets, device, precision)
            synchronize(device)
            return (time.perf_counter() - started) / count

        steps(warmup)
        step_seconds = float(np.median([steps(steps_per_window) for _ in range(windows)]))
        validation_seconds = _validation_seconds(probe, validation, device, precision)
    finally:
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)
        source.set_state(source_rng)
    # Whole epochs ran ~10 % slower than the timed steps (shuffling, metrics, checkpoints): plan
    # for that, so the schedule finishes inside the budget instead of being cut short.
    return ESTIMATE_MARGIN * (len(source) * step_seconds + validation_seconds)


def plan_epochs(epochs: int, time_budget: float | None, epoch_seconds: float | None) -> int:
    """How many epochs the schedule spans: `epochs`, or fewer when the time budget fits fewer."""
    if not time_budget or not epoch_seconds:
        return epochs
    return max(1, min(epochs, int(time_budget // epoch_seconds)))
