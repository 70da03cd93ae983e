"""The training loop's checkpoint: one file per run key holding everything a killed run needs
to continue as if it had not been stopped.

It holds the weights, the current phase's optimizer and schedule, the loop's state (epochs,
history, early-stopping counters, the time-budget plan) and every random generator the run
draws from: the loop's own, torch's global CPU generator (dropout on the CPU, photos augmented
without workers), the CUDA device's (dropout on the GPU) and the batch source's own (a
DataLoader's shuffling and worker seeds). Generator states are CPU byte tensors: the file is
always loaded onto the CPU (map_location="cpu"), since `set_rng_state` rejects a state moved to
a GPU; load_state_dict moves weights and optimizer moments to the model's device.

Checkpoints from before this format (CHECKPOINT_FORMAT) are not resumed: the run key includes
the format, so a new run starts in a new folder and the old folder is left as it was (delete it
by hand: KEEL_HOME/data/checkpoints/DATASET/KEY); a file of another format found in a run's
folder anyway is ignored with a warning and overwritten by the fresh run's first epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path

import torch

from keel.core.atomic import atomic_path
from keel.core.config import TrainConfig

CHECKPOINT_FORMAT = 2  # 1: the two loops' files before one loop (the transfer one without random state)


def config_key(config: TrainConfig, dataset_version: str) -> str:
    """A short hash of everything that decides the run, and of the checkpoint format:
    checkpoints are kept per key."""
    payload = json.dumps({"train": config.model_dump(), "dataset_version": dataset_version,
                          "checkpoint_format": CHECKPOINT_FORMAT}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def random_state(generator: torch.Generator, source_state: torch.Tensor | None) -> dict:
    """The states of every generator the run draws from, as CPU byte tensors."""
    device = generator.device
    return {
        "generator": generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        "source_rng": source_state,
    }


def restore_random_state(saved: dict, generator: torch.Generator) -> None:
    """Sets the loop's generator, torch's CPU generator and (on a GPU) the device's generator
    to the states `saved` holds; the batch source's own state is the source's to restore."""
    generator.set_state(saved["generator"])
    torch.set_rng_state(saved["torch_rng"])
    if generator.device.type == "cuda" and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], generator.device)


def save_checkpoint(path: Path, model, optimizer, scheduler, generator: torch.Generator,
                    source_state: torch.Tensor | None, state: dict) -> None:
    """Writes the full training state atomically: a kill mid-write leaves the previous one."""
    with atomic_path(Path(path)) as tmp:
        torch.save({
            "format": CHECKPOINT_FORMAT,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            **random_state(generator, source_state),
            "state": state,
        }, tmp)


def load_checkpoint(path: Path | None) -> dict | None:
    """The checkpoint at `path`, on the CPU; None when there is none or it is of another format."""
    if path is None or not Path(path).exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, EOFError, RuntimeError) as exc:  # not a checkpoint torch can read safely
        saved, reason = None, type(exc).__name__
    else:
        reason = "of another format (from an older Keel)"
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        logging.getLogger(__name__).warning("%s: a checkpoint %s; training starts afresh", path, reason)
        return None
    return saved
