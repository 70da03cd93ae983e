"""The training loop: whole-tensor batches on the device, batched augmentation, bf16 autocast,
early stopping and a checkpoint every epoch that a killed run resumes from."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from keel.data.augment import augment_batch
from keel.core.config import TrainConfig
from keel.data.datasets import DatasetVersion, class_indices, group_holdout
from keel.core.errors import ConfigError
from keel.core.io import atomic_path
from keel.models.networks import build_model


# --------------------------------------------------------------------------- device


def select_device(preference: str = "auto") -> torch.device:
    """CUDA when asked for or available, else the CPU."""
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu")
        return torch.device("cuda")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX-512-BF16 or AMX), where autocast pays."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def select_precision(preference: str, device: torch.device) -> str:
    """'bf16' or 'fp32': bf16 on GPUs that support it and on CPUs with bf16 instructions."""
    if preference != "auto":
        return preference
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() else "fp32"


def autocast(device: torch.device, precision: str):
    """The autocast context for `precision` on `device` (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- data


@dataclass
class TensorSplit:
    """Images as uint8 N x C x H x W and class indices, already on the training device."""

    images: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


def load_split(version: DatasetVersion, indices: np.ndarray, device: torch.device) -> TensorSplit:
    """Rows `indices` of a dataset version as tensors on `device`."""
    images = np.asarray(version.images()[np.sort(indices)])
    labels = version.labels()[np.sort(indices)]
    targets = class_indices(labels, version.meta["labels"])
    tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return TensorSplit(tensor.to(device), torch.from_numpy(targets).to(device))


def training_splits(version: DatasetVersion, config: TrainConfig, device: torch.device) -> tuple[TensorSplit, TensorSplit]:
    """The training rows minus a stratified validation slice (for early stopping; in whole groups
    when the version has groups), and that slice."""
    train_idx = version.indices("train")
    val_pos = group_holdout(version, train_idx, config.validation_fraction, config.seed)
    fit_idx = np.delete(train_idx, val_pos)
    return load_split(version, fit_idx, device), load_split(version, train_idx[val_pos], device)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to float in [0, 1] (the course's x / 255)."""
    return images.float().div_(255.0)


# --------------------------------------------------------------------------- loop


@dataclass
class TrainResult:
    model: nn.Module
    history: list[dict]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    train_seconds: float  # the epochs' training passes alone
    loop_seconds: float  # the whole epoch loop: training, validation passes, checkpoints
    resumed_from_epoch: int
    device: str
    precision: str
    planned_epochs: int = 0  # what the schedule spans: min(epochs, what the time budget fits)
    stop_reason: str | None = None  # "patience" or "time budget" when stopped_early


def config_key(config: TrainConfig, dataset_version: str) -> str:
    """A short hash of everything that decides the run: checkpoints are kept per key."""
    payload = json.dumps({"train": config.model_dump(), "dataset_version": dataset_version}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@torch.no_grad()
def predict_logits(model: nn.Module, images: torch.Tensor, device: torch.device, precision: str,
                   batch_size: int = 1024) -> torch.Tensor:
    """Float32 logits for uint8 images N x C x H x W, computed in batches without gradients."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = to_float(images[start:start + batch_size].to(device, non_blocking=True))
        with autocast(device, precision):
            out.append(model(batch).float())
    return torch.cat(out) if out else torch.empty(0)


def _evaluate(model, split: TensorSplit, device, precision) -> tuple[float, float]:
    logits = predict_logits(model, split.images, device, precision)
    loss = F.cross_entropy(logits, split.targets).item()
    accuracy = (logits.argmax(1) == split.targets).float().mean().item()
    return loss, accuracy


EpochCallback = Callable[[int, dict, nn.Module], None]


def _train_step(model, optimizer, images: torch.Tensor, targets: torch.Tensor, config: TrainConfig,
                device: torch.device, precision: str, generator: torch.Generator):
    """One optimizer step on a batch of uint8 images; returns the loss and the logits."""
    images = augment_batch(to_float(images), config.augment, generator)
    images = images.contiguous(memory_format=torch.channels_last)
    with autocast(device, precision):
        logits = model(images)
        loss = F.cross_entropy(logits.float(), targets, label_smoothing=config.label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss, logits


ESTIMATE_MARGIN = 1.15


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def estimate_epoch_seconds(model: nn.Module, train: TensorSplit, validation: TensorSplit, config: TrainConfig,
                           device: torch.device, precision: str, warmup: int = 3, windows: int = 5,
                           steps_per_window: int = 3) -> float:
    """Seconds one epoch (training pass and validation pass) should take, from a few timed
    training steps and one timed validation batch on a copy of `model`.

    Both passes are warmed up first (the first calls pick and compile kernels: timing them
    planned 7 MNIST epochs where 10 fitted), and the step time is the median of a few short
    windows, so a moment of contention does not decide the plan. The model, its optimizer and every random generator the loop uses are
    left as they were, so a run with a budget draws the same numbers as one without."""
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    try:
        probe = copy.deepcopy(model)
        probe.train()
        optimizer = torch.optim.AdamW(probe.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
        generator = torch.Generator(device=device).manual_seed(config.seed + 1)
        batch = min(config.batch_size, len(train))

        def steps(count: int) -> float:
            _synchronize(device)
            started = time.perf_counter()
            for _ in range(count):
                idx = torch.randint(len(train), (batch,), device=device, generator=generator)
                _train_step(probe, optimizer, train.images[idx], train.targets[idx], config, device, precision, generator)
            _synchronize(device)
            return (time.perf_counter() - started) / count

        steps(warmup)
        step_seconds = float(np.median([steps(steps_per_window) for _ in range(windows)]))
        rows = min(len(validation), 1024)
        predict_logits(probe, validation.images[:rows], device, precision)  # warm-up
        started = time.perf_counter()
        predict_logits(probe, validation.images[:rows], device, precision)
        _synchronize(device)
        validation_seconds = (time.perf_counter() - started) * len(validation) / max(rows, 1)
    finally:
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state(cuda_rng, device)
    steps_per_epoch = max(1, len(train) // config.batch_size)
    # Whole epochs ran ~10 % slower than the timed steps (shuffling, metrics, checkpoints): plan
    # for that, so the schedule finishes inside the budget instead of being cut short.
    return ESTIMATE_MARGIN * (steps_per_epoch * step_seconds + validation_seconds)


def plan_epochs(config: TrainConfig, epoch_seconds: float | None) -> int:
    """How many epochs the schedule spans: `config.epochs`, or fewer when the time budget fits fewer."""
    if not config.time_budget or not epoch_seconds:
        return config.epochs
    return max(1, min(config.epochs, int(config.time_budget // epoch_seconds)))


def fit(train: TensorSplit, validation: TensorSplit, n_classes: int, config: TrainConfig,
        checkpoint_path: Path | None = None, on_epoch_end: EpochCallback | None = None,
        progress: bool | None = None) -> TrainResult:
    """Trains `config.model` and returns the best epoch's weights.

    With `config.time_budget`, a few timed warm-up steps plan how many epochs fit (at most
    `config.epochs`) and the one-cycle schedule spans those; the loop also stops after an
    epoch once its training and validation passes have used the budget (a slower machine).

    With `checkpoint_path`, the whole state (weights, optimizer, schedule and its planned
    epochs, random generators, history, early-stopping counters) is written atomically after
    every epoch, and a call that finds an unfinished checkpoint there resumes after its last
    completed epoch, on the same plan.
    """
    device = train.images.device
    precision = select_precision(config.precision, device)
    _, channels, height, width = train.images.shape
    torch.manual_seed(config.seed)
    model = build_model(config.model, channels, height, width, n_classes).to(device)
    model = model.to(memory_format=torch.channels_last)
    steps_per_epoch = max(1, len(train) // config.batch_size)  # drop the ragged last batch
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    generator = torch.Generator(device=device).manual_seed(config.seed)

    saved, probe_seconds = None, 0.0
    if checkpoint_path is not None and Path(checkpoint_path).exists():
        # On the CPU: the random generators' states must stay CPU byte tensors; load_state_dict
        # moves the weights and the optimizer's moments to the model's device.
        saved = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
        state = saved["state"]
        state.setdefault("planned_epochs", config.epochs)  # a checkpoint from before time budgets
        state.setdefault("budget_seconds", state["train_seconds"])
    else:
        probe_started = time.perf_counter()
        epoch_seconds = (estimate_epoch_seconds(model, train, validation, config, device, precision)
                         if config.time_budget and config.epochs > 1 else None)
        probe_seconds = time.perf_counter() - probe_started
        state = {"epoch": 0, "history": [], "best_score": (-1.0, 0.0), "best_epoch": 0, "best_state": None,
                 "bad_epochs": 0, "stopped_early": False, "stop_reason": None, "train_seconds": 0.0,
                 "planned_epochs": plan_epochs(config, epoch_seconds), "estimated_epoch_seconds": epoch_seconds,
                 "budget_seconds": 0.0}
    planned = state["planned_epochs"]
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.learning_rate, epochs=planned, steps_per_epoch=steps_per_epoch)
    resumed_from = 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        resumed_from = state["epoch"]

    loop_started = time.perf_counter()
    done = state["stopped_early"] or state["epoch"] >= planned
    while not done:
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(train), device=device, generator=generator)
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{planned}", unit="batch",
                   leave=False, disable=(not progress) if progress is not None else None)
        for step in bar:
            idx = order[step * config.batch_size:(step + 1) * config.batch_size]
            targets = train.targets[idx]
            loss, logits = _train_step(model, optimizer, train.images[idx], targets, config, device, precision, generator)
            scheduler.step()
            total_loss += loss.detach()
            correct += (logits.argmax(1) == targets).sum()
        bar.close()
        train_seconds = time.perf_counter() - started
        val_loss, val_accuracy = _evaluate(model, validation, device, precision)
        seen = steps_per_epoch * config.batch_size
        metrics = {
            "train_loss": total_loss.item() / steps_per_epoch,
            "train_accuracy": correct.item() / seen,
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "learning_rate": scheduler.get_last_lr()[0],
            "epoch_seconds": train_seconds,
            "images_per_second": seen / train_seconds,
        }
        state["epoch"] = epoch
        state["train_seconds"] += train_seconds
        state["budget_seconds"] += time.perf_counter() - started
        state["history"].append({"epoch": epoch, **metrics})
        score = (val_accuracy, -val_loss)  # accuracy saturates on easy data; then lower loss wins
        if score > tuple(state["best_score"]):
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0,
                         best_state=copy.deepcopy(model.state_dict()))
        else:
            state["bad_epochs"] += 1
            if state["bad_epochs"] >= config.patience:
                state.update(stopped_early=True, stop_reason="patience")
        if (not state["stopped_early"] and epoch < planned and config.time_budget
                and state["budget_seconds"] >= config.time_budget):
            state.update(stopped_early=True, stop_reason="time budget")
        done = state["stopped_early"] or epoch >= planned
        if checkpoint_path is not None:
            save_checkpoint(checkpoint_path, model, optimizer, scheduler, generator, state)
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics, model)

    state["loop_seconds"] = state.get("loop_seconds", 0.0) + probe_seconds + time.perf_counter() - loop_started
    if state["best_state"] is not None:
        model.load_state_dict(state["best_state"])
    return TrainResult(
        model=model, history=state["history"], best_epoch=state["best_epoch"], epochs_run=state["epoch"],
        stopped_early=state["stopped_early"], train_seconds=state["train_seconds"],
        loop_seconds=state["loop_seconds"],
        resumed_from_epoch=resumed_from, device=str(device), precision=precision,
        planned_epochs=planned, stop_reason=state.get("stop_reason"))


def save_checkpoint(path: Path, model, optimizer, scheduler, generator, state: dict) -> None:
    """Writes the full training state atomically: a kill mid-write leaves the previous one."""
    with atomic_path(Path(path)) as tmp:
        torch.save({
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            # CUDA dropout draws from the device's default generator.
            "cuda_rng": torch.cuda.get_rng_state(generator.device) if generator.device.type == "cuda" else None,
            "state": state,
        }, tmp)


def set_threads() -> None:
    """Uses every core for intra-op work unless the user set OMP_NUM_THREADS."""
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
