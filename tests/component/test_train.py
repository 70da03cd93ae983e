import os
import subprocess
import sys

import pytest
import torch

import keel.training.loop
from keel.core.config import TrainConfig, load_dataset_config
from keel.data.batches import training_splits
from keel.modalities import ingest
from keel.modalities.pixels import PIXEL_TABLE
from keel.models.device import predict_logits
from keel.stages.runs import hold_run_lock, release_run_lock
from keel.training.budget import estimate_epoch_seconds, plan_epochs
from keel.training.train import fit, single_phase
from tests.conftest import REPO


@pytest.fixture
def splits(tmp_path, small_config):
    version = ingest(load_dataset_config(small_config), root=tmp_path / "v").version
    return training_splits(version, TrainConfig(validation_fraction=0.2), torch.device("cpu"))


def test_training_learns_the_real_subset(splits):
    train, validation = splits
    result = fit(train, validation, 24, TrainConfig(epochs=6, batch_size=32, learning_rate=3e-3), progress=False)
    assert result.epochs_run >= 1 and len(result.history) == result.epochs_run
    accuracy = (predict_logits(result.model, validation.images, torch.device("cpu"), "fp32").argmax(1)
                == validation.targets).float().mean().item()
    assert accuracy > 0.3  # 24 classes: chance is 0.04


class Interrupted(Exception):
    pass


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, splits):
    """A run stopped after epoch 1 and resumed ends where an uninterrupted run ends."""
    straight, resumed = _straight_and_resumed(tmp_path, splits, TrainConfig(epochs=3, batch_size=64, patience=10))
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_run == 3
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    _assert_same_weights(straight, resumed)


def _straight_and_resumed(tmp_path, splits, config, before_resume=None):
    """An uninterrupted run, and a run stopped after epoch 1 then resumed from its checkpoint."""
    train, validation = splits
    straight = fit(train, validation, 24, config, checkpoint_path=tmp_path / "a.pt", progress=False)

    def stop_after_first(epoch, metrics, model):
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(train, validation, 24, config, checkpoint_path=tmp_path / "b.pt", on_epoch_end=stop_after_first, progress=False)
    if before_resume is not None:
        before_resume()
    return straight, fit(train, validation, 24, config, checkpoint_path=tmp_path / "b.pt", progress=False)


def _assert_same_weights(a_result, b_result):
    for (name, a), (_, b) in zip(a_result.model.state_dict().items(), b_result.model.state_dict().items()):
        torch.testing.assert_close(a, b, msg=name)


def test_a_checkpoint_from_before_the_one_loop_is_not_resumed_but_replaced(tmp_path, splits, caplog):
    """The two loops' checkpoints (format 1: no format mark) start a fresh run with a warning,
    and its first epoch overwrites the file; the run key changed with the format too."""
    from keel.training.checkpoint import CHECKPOINT_FORMAT, config_key

    train, validation = splits
    config = TrainConfig(epochs=1, batch_size=64)
    old = tmp_path / "last.pt"
    torch.save({"model": {}, "optimizer": {}, "scheduler": None, "state": {"epoch": 1, "history": []}}, old)
    result = fit(train, validation, 24, config, checkpoint_path=old, progress=False)
    assert result.resumed_from_epoch == 0 and result.epochs_run == 1
    assert f"{old}: a checkpoint of another format (from an older Keel); training starts afresh" in caplog.text
    assert torch.load(old, map_location="cpu", weights_only=True)["format"] == CHECKPOINT_FORMAT
    assert len(config_key(config, "v1")) == 16 and config_key(config, "v1") != config_key(config, "v2")


def test_early_stopping_stops_when_validation_stalls(splits):
    train, validation = splits
    # A learning rate this small cannot move validation accuracy: patience runs out.
    result = fit(train, validation, 24, TrainConfig(epochs=20, patience=2, learning_rate=1e-9, augment={"enabled": False}),
                 progress=False)
    assert result.stopped_early and result.epochs_run < 20


def test_time_budget_plans_the_schedule_over_the_epochs_that_fit(splits, monkeypatch):
    train, validation = splits
    monkeypatch.setattr(keel.training.loop, "estimate_epoch_seconds", lambda *a, **k: 10.0)  # 35 s fit 3 epochs
    config = TrainConfig(epochs=40, time_budget=35, batch_size=64, patience=100)
    result = fit(train, validation, 24, config, progress=False)
    assert result.planned_epochs == 3 and result.epochs_run == 3 and result.stop_reason is None
    # The one-cycle schedule spans the 3 planned epochs, not 40: it has annealed by the end.
    steps = len(train) // 64

    def one_cycle(epochs):
        optimizer = torch.optim.AdamW([torch.zeros(1, requires_grad=True)], lr=config.learning_rate)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.learning_rate, epochs=epochs, steps_per_epoch=steps)
        rates = []
        for _ in range(3):
            for _ in range(steps):
                optimizer.step()
                schedule.step()
            rates.append(schedule.get_last_lr()[0])
        return rates

    assert [h["learning_rate"] for h in result.history] == pytest.approx(one_cycle(3))
    assert result.history[-1]["learning_rate"] < 0.05 * config.learning_rate < one_cycle(40)[-1]


def test_a_run_that_falls_behind_its_budget_stops_after_the_epoch_that_spends_it(splits, monkeypatch):
    train, validation = splits
    monkeypatch.setattr(keel.training.loop, "estimate_epoch_seconds", lambda *a, **k: 1e-6)  # plans all 20
    result = fit(train, validation, 24, TrainConfig(epochs=20, time_budget=0.001, batch_size=64, patience=100),
                 progress=False)
    assert result.planned_epochs == 20
    assert result.epochs_run == 1 and result.stopped_early and result.stop_reason == "time budget"


def test_the_epoch_estimate_leaves_the_model_and_the_random_generators_alone(splits):
    from keel.models.networks import build_model

    train, validation = splits
    config = TrainConfig(batch_size=64, time_budget=60, epochs=40)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    model = build_model("cnn", 1, 28, 28, 24)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    source = PIXEL_TABLE.tensor_batches(train, config, cpu, train=True)
    held_out = PIXEL_TABLE.tensor_batches(validation, config, cpu, train=False)
    seconds = estimate_epoch_seconds(model, single_phase(config, lambda: source), source, held_out, config, cpu, "fp32")
    assert 1e-4 < seconds < 30  # 18 steps of 64 real images and a validation pass on 96
    assert torch.equal(torch.get_rng_state(), rng)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert plan_epochs(40, 60, 7.0) == 8 and plan_epochs(40, 60, 0.5) == 40 and plan_epochs(40, 60, 100.0) == 1
    assert plan_epochs(5, 0, 100.0) == 5 and plan_epochs(5, None, 100.0) == 5


def test_a_resumed_budgeted_run_keeps_its_plan_and_ends_with_the_same_weights(tmp_path, splits, monkeypatch):
    config = TrainConfig(epochs=40, time_budget=30, batch_size=64, patience=100)
    monkeypatch.setattr(keel.training.loop, "estimate_epoch_seconds", lambda *a, **k: 10.0)  # plans 3
    # The machine got faster: a fresh plan would now fit 15 epochs; the resumed run keeps its 3.
    faster = lambda: monkeypatch.setattr(keel.training.loop, "estimate_epoch_seconds", lambda *a, **k: 2.0)  # noqa: E731
    straight, resumed = _straight_and_resumed(tmp_path, splits, config, before_resume=faster)
    assert straight.planned_epochs == resumed.planned_epochs == 3
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_run == 3
    assert [h["learning_rate"] for h in resumed.history] == [h["learning_rate"] for h in straight.history]
    _assert_same_weights(straight, resumed)


_HOLDER = """
import sys
from pathlib import Path
from keel.stages.runs import hold_run_lock
hold_run_lock(Path(sys.argv[1]), on_wait=lambda line: print(line, flush=True))
print("held", flush=True)
sys.stdin.read()
"""


def test_the_run_lock_makes_an_identical_training_wait_and_a_killed_one_lets_go(tmp_path):
    folder = tmp_path / "checkpoints" / "twins" / "0123456789abcdef"
    heard = []
    hold_run_lock(folder, on_wait=heard.append)
    hold_run_lock(folder, on_wait=heard.append)  # a retried task in the same process: held already
    assert heard == []
    other = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == (
            f"another identical training (pid {os.getpid()}) is running; waiting for it to finish")
        release_run_lock(folder)
        assert other.stdout.readline().strip() == "held"
        other.kill()  # kill -9 while it holds the lock: the lock dies with it
        other.wait(timeout=30)
        hold_run_lock(folder, on_wait=heard.append)
        assert heard == []
    finally:
        if other.poll() is None:
            other.kill()
            other.wait()
        other.stdout.close()
        other.stdin.close()
        release_run_lock(folder)
