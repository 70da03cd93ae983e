"""The training loop: every modality and every recipe trains through `run_phases`.

A run is a list of phases (keel.training.phases.Phase): a pixel network trains in one, a
transfer network in two (its head on cached features, then fine-tuning). One loop serves
them all, with
- one checkpoint format, written atomically after every epoch (keel.training.checkpoint): a
  call that finds an unfinished checkpoint resumes after its last completed epoch, in the same
  phase, on the same plan, drawing the same random numbers as the uninterrupted run;
- one early-stopping rule: the best epoch is the one with the highest validation accuracy,
  then the lowest validation loss, over the whole run, and its weights are returned; in a
  phase with `early_stopping`, `config.patience` epochs in a row without a better epoch (counted
  from the phase's start) end the run;
- one time budget: in a `budgeted` phase, a few timed warm-up steps plan how many epochs fit
  (at most the phase's epochs) and its one-cycle schedule spans those; the run also stops
  after an epoch once its training and validation passes have used the budget;
- one metrics path: each epoch's metrics go to the history, to `on_epoch_end`, and as one
  line to the "keel.training" logger (loss, accuracy, rows/s, time left: what the `keel`
  command prints and a Prefect flow run's logs keep; the tqdm bar shows only on a terminal);
- one or many processes: called in each process of a process group (keel.training.distributed,
  `keel train --nproc N`), it trains data-parallel: each rank on its share of every batch, the
  model in DistributedDataParallel, metrics and decisions reduced alike on every rank; rank 0
  alone reads and writes the checkpoint and calls `on_epoch_end`.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from keel.core.config import TrainConfig
from keel.data.batches import BatchSource, rank_seed
from keel.training.budget import estimate_epoch_seconds, plan_epochs
from keel.training.checkpoint import load_checkpoint, restore_random_state, save_checkpoint
from keel.training.distributed import agreed, from_leader, ranks, shard, sync_buffers, wrap
from keel.training.phases import Phase, evaluate, loop_generator, make_optimizer, make_schedule, train_step

EpochCallback = Callable[[int, dict, nn.Module], None]
_LOG = logging.getLogger("keel.training")


@dataclass
class TrainResult:
    model: nn.Module  # with the best epoch's weights
    history: list[dict]
    best_epoch: int
    epochs_run: int
    stopped_early: bool
    train_seconds: float  # the epochs' training passes alone
    loop_seconds: float  # the whole epoch loop: training, validation passes, checkpoints
    resumed_from_epoch: int
    device: str
    precision: str
    planned_epochs: int = 0  # what the phases' schedules span: the time budget may plan fewer than asked
    stop_reason: str | None = None  # "patience" or "time budget" when stopped_early
    phase_boundary: int | None = None  # the last epoch of the first phase, when there are several
    record: dict = field(default_factory=dict)  # how the network was built (the modality's build_model)
    feature_cache: str = ""  # transfer: the file of the frozen backbone's features

    @property
    def pretrained(self) -> str | None:
        return self.record.get("pretrained")

    @property
    def build(self) -> dict | None:
        return self.record.get("build")


def _fresh_state(phases: int) -> dict:
    return {"epoch": 0, "phase": 0, "phase_epoch": 0, "planned": [None] * phases, "phase_ends": [],
            "history": [], "best_score": (-1.0, 0.0), "best_epoch": 0, "best_state": None, "bad_epochs": 0,
            "stopped_early": False, "stop_reason": None, "train_seconds": 0.0, "budget_seconds": 0.0,
            "estimated_epoch_seconds": None}


def run_phases(model: nn.Module, phases: list[Phase], validation: BatchSource, config: TrainConfig,
               device: torch.device, precision: str, checkpoint_path: Path | None = None,
               on_epoch_end: EpochCallback | None = None, progress: bool | None = None) -> TrainResult:
    """Trains `model` (already on `device`) through `phases` and returns it with the best
    epoch's weights. `config` gives the seed, patience, time budget and weight decay; with
    `checkpoint_path`, the run checkpoints every epoch and resumes from what it finds there."""
    return _Loop(model, phases, validation, config, device, precision, checkpoint_path, on_epoch_end, progress).run()


class _Loop:
    """One call of run_phases: the run's context and its state (what the checkpoint keeps)."""

    def __init__(self, model, phases, validation, config, device, precision, checkpoint_path, on_epoch_end, progress):
        self.model, self.phases, self.validation, self.config = model, phases, validation, config
        self.device, self.precision, self.checkpoint_path = device, precision, checkpoint_path
        self.on_epoch_end, self.progress = on_epoch_end, progress
        self.phase_walls: list[float] = []  # this call's epochs of the current phase: wall seconds each
        self.ranks = ranks()  # rank 0 of 1 outside data-parallel training
        self.validation = shard(validation, self.ranks)
        self.generator = loop_generator(device, config.seed)  # seeded alike on every rank: the same batches
        # Rank 0 alone reads the checkpoint (another machine's rank may not see the file).
        self.saved = from_leader(load_checkpoint(checkpoint_path if self.ranks.leader else None))
        self.state = self.saved["state"] if self.saved is not None else _fresh_state(len(phases))

    def run(self) -> TrainResult:
        started = time.perf_counter()
        resumed_from, resumed_phase = self.state["epoch"], self.state["phase"]
        if self.saved is not None:
            self.model.load_state_dict(self.saved["model"])
            restore_random_state(self.saved, self.generator)
        for index, phase in enumerate(self.phases):
            if self.state["stopped_early"]:
                break
            if index < self.state["phase"]:
                continue
            if index > self.state["phase"]:
                self.state.update(phase=index, phase_epoch=0, bad_epochs=0)
            resuming = self.saved is not None and index == resumed_phase and self.state["phase_epoch"] > 0
            self._run_phase(index, phase, self.saved if resuming else None)
            if len(self.state["phase_ends"]) == index:
                self.state["phase_ends"].append(self.state["epoch"])
        loop_seconds = time.perf_counter() - started
        if self.state["best_state"] is not None:
            self.model.load_state_dict(self.state["best_state"])
        self.model.requires_grad_(True)
        return self._result(resumed_from, loop_seconds)

    def _run_phase(self, index: int, phase: Phase, saved: dict | None) -> None:
        """The phase's remaining epochs (none when a resumed run had finished it)."""
        planned = self.state["planned"][index]
        if phase.epochs == 0 or (planned is not None and self.state["phase_epoch"] >= planned):
            self.state["planned"][index] = planned or 0
            return
        source = shard(phase.batches(), self.ranks)
        if planned is None:
            planned = self.state["planned"][index] = self._plan(phase, source)
        optimizer = make_optimizer(phase, self.model, self.config.weight_decay)
        scheduler = make_schedule(phase, optimizer, planned, len(source))
        trained = wrap(self.model, self.device)  # DistributedDataParallel in a process group, else the model
        self.phase_walls = []
        if saved is not None:
            optimizer.load_state_dict(saved["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(saved["scheduler"])
            source.set_state(saved.get("source_rng"))
        while not self.state["stopped_early"] and self.state["phase_epoch"] < planned:
            metrics = self._train_epoch(phase, trained, source, optimizer, scheduler, planned)
            self._finish_epoch(phase, metrics, planned, optimizer, scheduler, source)

    def _plan(self, phase: Phase, source: BatchSource) -> int:
        """The phase's epochs: as many as the time budget fits, in a budgeted phase."""
        if not (phase.budgeted and self.config.time_budget and phase.epochs > 1):
            return phase.epochs
        seconds = estimate_epoch_seconds(self.model, phase, source, self.validation, self.config, self.device,
                                         self.precision)
        seconds = agreed([seconds], "max")[0]  # every rank plans from the slowest one's figure
        self.state["estimated_epoch_seconds"] = seconds
        return plan_epochs(phase.epochs, self.config.time_budget, seconds)

    def _train_epoch(self, phase: Phase, trained: nn.Module, source: BatchSource, optimizer, scheduler,
                     planned: int) -> dict:
        """One training pass (of `trained`: the model, or its DistributedDataParallel wrapper) and
        one validation pass; the epoch's metrics (over every rank's rows)."""
        started = time.perf_counter()
        if self.ranks.world > 1:  # dropout masks of the rank's own, drawn again alike by a resumed run
            torch.manual_seed(rank_seed(self.generator, self.ranks.rank, "dropout"))
        self.model.train()
        total_loss = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device, dtype=torch.long)
        seen = 0
        label = f"{phase.name} epoch {self.state['phase_epoch'] + 1}/{planned}"
        bar = tqdm(source.epoch(self.generator), total=len(source), desc=label, unit="batch", leave=False,
                   disable=True if not self.ranks.leader else (not self.progress) if self.progress is not None else None)
        for inputs, targets in bar:
            loss, logits = train_step(trained, phase, optimizer, inputs, targets, self.device, self.precision)
            if scheduler is not None:
                scheduler.step()
            total_loss += loss.detach() * len(targets)
            correct += (logits.argmax(1) == targets).sum()
            seen += len(targets)
        bar.close()
        total_loss, correct, seen = agreed([total_loss.item(), correct.item(), seen])
        sync_buffers(self.model)
        seconds = time.perf_counter() - started
        val_loss, val_accuracy = evaluate(self.model, self.validation, self.device, self.precision)
        seconds, spent = agreed([seconds, time.perf_counter() - started], "max")  # the slowest rank's, on every rank
        self.state["train_seconds"] += seconds
        self.phase_walls.append(spent)
        if phase.budgeted:
            self.state["budget_seconds"] += spent
        return {**phase.metrics, "train_loss": total_loss / max(1, seen), "train_accuracy": correct / max(1, seen),
                "val_loss": val_loss, "val_accuracy": val_accuracy, "learning_rate": optimizer.param_groups[0]["lr"],
                "epoch_seconds": seconds, "images_per_second": seen / seconds if seconds > 0 else 0.0,
                "processes": self.ranks.world}  # a run resumed with another --nproc shows which epochs ran how

    def _finish_epoch(self, phase: Phase, metrics: dict, planned: int, optimizer, scheduler, source: BatchSource) -> None:
        """Records the epoch, applies the early-stopping rule and the budget, checkpoints, reports."""
        state = self.state
        epoch = state["epoch"] = state["epoch"] + 1
        state["phase_epoch"] += 1
        state["history"].append({"epoch": epoch, **metrics})
        score = (metrics["val_accuracy"], -metrics["val_loss"])  # accuracy saturates on easy data; then lower loss wins
        if score > tuple(state["best_score"]):
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0, best_state=copy.deepcopy(self.model.state_dict()))
        elif phase.early_stopping:
            state["bad_epochs"] += 1
            if state["bad_epochs"] >= self.config.patience:
                state.update(stopped_early=True, stop_reason="patience")
        if (phase.budgeted and not state["stopped_early"] and state["phase_epoch"] < planned and self.config.time_budget
                and state["budget_seconds"] >= self.config.time_budget):
            state.update(stopped_early=True, stop_reason="time budget")
        if self.checkpoint_path is not None and self.ranks.leader:  # the unwrapped model: any world size resumes it
            save_checkpoint(self.checkpoint_path, self.model, optimizer, scheduler, self.generator, source.get_state(), state)
        if self.ranks.leader:
            _LOG.info(self._epoch_line(phase, metrics, planned))
        if self.on_epoch_end is not None and self.ranks.leader:
            self.on_epoch_end(epoch, metrics, self.model)

    def _epoch_line(self, phase: Phase, metrics: dict, planned: int) -> str:
        """The finished epoch in one line: `epoch 3/10  loss 0.412  accuracy 0.913  val_loss 0.398
        val_accuracy 0.884  1,234 rows/s  12 s left`. The epochs ahead are those the phases plan
        (patience may stop sooner); time left is the current phase's mean epoch times them."""
        state = self.state
        total = sum(p if p is not None else ph.epochs for p, ph in zip(state["planned"], self.phases))
        line = f"epoch {state['epoch']}/{total}"
        if len(self.phases) > 1:
            line += f" ({phase.name} {state['phase_epoch']}/{planned})"
        line += (f"  loss {metrics['train_loss']:.3f}  accuracy {metrics['train_accuracy']:.3f}"
                 f"  val_loss {metrics['val_loss']:.3f}  val_accuracy {metrics['val_accuracy']:.3f}"
                 f"  {metrics['images_per_second']:,.0f} rows/s")
        if state["stopped_early"]:
            return f"{line}  stopped early: {state['stop_reason']}"
        if state["epoch"] < total and self.phase_walls:
            left = (total - state["epoch"]) * sum(self.phase_walls) / len(self.phase_walls)
            line += f"  {_duration(left)} left"
        return line

    def _result(self, resumed_from: int, loop_seconds: float) -> TrainResult:
        state = self.state
        planned = sum(p if p is not None else phase.epochs for p, phase in zip(state["planned"], self.phases))
        boundary = state["phase_ends"][0] if len(self.phases) > 1 and state["phase_ends"] else None
        return TrainResult(
            model=self.model, history=state["history"], best_epoch=state["best_epoch"], epochs_run=state["epoch"],
            stopped_early=state["stopped_early"], train_seconds=state["train_seconds"], loop_seconds=loop_seconds,
            resumed_from_epoch=resumed_from, device=str(self.device), precision=self.precision,
            planned_epochs=planned, stop_reason=state["stop_reason"], phase_boundary=boundary)


def _duration(seconds: float) -> str:
    """A time left in words a person reads at a glance: 12 s, 7 min, 1.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
