"""What one phase of training is (which parameters train, at what rate, on which batches,
through which forward pass), and the steps every phase shares: one optimizer step, one
validation pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from keel.data.batches import BatchSource
from keel.models.device import autocast
from keel.training.distributed import agreed, ranks


def _all_parameters(model: nn.Module) -> list[nn.Parameter]:
    return list(model.parameters())


def _whole_model(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    return model(inputs)


@dataclass
class Phase:
    """A stretch of epochs with one optimizer (AdamW) and one schedule.

    `batches()` builds the phase's training batches when the phase starts (not before: a run
    resumed past a phase never pays for its data); `parameters(model)` sets which parameters
    train and returns them; `forward(model, inputs)` gives the logits.
    """

    name: str
    epochs: int  # the most the phase runs (fewer when the time budget plans fewer or patience runs out)
    learning_rate: float
    batches: Callable[[], BatchSource]
    parameters: Callable[[nn.Module], list[nn.Parameter]] = _all_parameters
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] = _whole_model
    one_cycle: bool = True  # a one-cycle schedule over the planned epochs; else a constant rate
    label_smoothing: float = 0.0
    autocast: bool = True  # in the run's precision (bf16 where it pays); False: always fp32
    early_stopping: bool = True  # `patience` epochs without a better validation score end the run
    budgeted: bool = False  # the time budget plans this phase's epochs and can end the run in it
    metrics: dict = field(default_factory=dict)  # logged with each of its epochs, e.g. {"phase": 1}


def loop_generator(device: torch.device, seed: int) -> torch.Generator:
    """The loop's random generator: on the GPU when training there (shuffling and augmenting
    on the device), else on the CPU."""
    generator = torch.Generator(device=device) if device.type == "cuda" else torch.Generator()
    return generator.manual_seed(seed)


def make_optimizer(phase: Phase, model: nn.Module, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(phase.parameters(model), lr=phase.learning_rate, weight_decay=weight_decay)


def make_schedule(phase: Phase, optimizer, epochs: int, steps_per_epoch: int):
    """The one-cycle schedule over `epochs` (None for a constant rate)."""
    if not phase.one_cycle:
        return None
    return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=phase.learning_rate, epochs=max(1, epochs),
                                               steps_per_epoch=max(1, steps_per_epoch))


def train_step(model: nn.Module, phase: Phase, optimizer, inputs: torch.Tensor, targets: torch.Tensor,
               device: torch.device, precision: str) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on a batch; returns the loss and the logits."""
    with autocast(device, precision if phase.autocast else "fp32"):
        logits = phase.forward(model, inputs)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=phase.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


@torch.no_grad()
def evaluate(model: nn.Module, validation: BatchSource, device: torch.device, precision: str) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` on the validation batches; in data-parallel
    training, on every rank's share of them (sums reduced over the ranks)."""
    model.eval()
    logits, targets = [], []
    for inputs, batch_targets in validation.epoch(None):
        with autocast(device, precision):
            logits.append(model(inputs).float())
        targets.append(batch_targets)
    if ranks().world == 1:
        logits, target = torch.cat(logits), torch.cat(targets)
        return F.cross_entropy(logits, target).item(), (logits.argmax(1) == target).float().mean().item()
    sums = [0.0, 0.0, 0.0]  # a rank whose share is empty (fewer rows than ranks) adds nothing
    if logits:
        logits, target = torch.cat(logits), torch.cat(targets)
        sums = [F.cross_entropy(logits, target, reduction="sum").item(), (logits.argmax(1) == target).sum().item(),
                len(target)]
    loss, correct, rows = agreed(sums)
    return loss / max(1.0, rows), correct / max(1.0, rows)
