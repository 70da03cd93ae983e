import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from keel.core.config import TrainConfig, load_dataset_config
from keel.data.datasets import ingest
from keel.training.evaluate import classification_metrics
from keel.stages.pipeline import hold_run_lock, release_run_lock
from keel.training.train import fit, predict_logits, select_precision, training_splits
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


def test_early_stopping_stops_when_validation_stalls(splits):
    train, validation = splits
    # A learning rate this small cannot move validation accuracy: patience runs out.
    result = fit(train, validation, 24, TrainConfig(epochs=20, patience=2, learning_rate=1e-9, augment={"enabled": False}),
                 progress=False)
    assert result.stopped_early and result.epochs_run < 20


def test_precision_selection():
    assert select_precision("fp32", torch.device("cpu")) == "fp32"
    assert select_precision("auto", torch.device("cpu")) in ("bf16", "fp32")


def test_metrics_on_a_hand_checked_example():
    targets = np.array([0, 0, 1, 1, 2, 2])
    predictions = np.array([0, 1, 1, 1, 2, 0])
    m = classification_metrics(targets, predictions, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    per = {r["class"]: r for r in m["per_class"]}
    assert per["a"]["precision"] == pytest.approx(0.5) and per["a"]["recall"] == pytest.approx(0.5)
    assert per["b"]["precision"] == pytest.approx(2 / 3) and per["b"]["recall"] == pytest.approx(1.0)
    assert per["c"]["precision"] == pytest.approx(1.0) and per["c"]["recall"] == pytest.approx(0.5)
    f1 = [0.5, 0.8, 2 / 3]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_time_budget_plans_the_schedule_over_the_epochs_that_fit(splits, monkeypatch):
    import keel.training.train

    train, validation = splits
    monkeypatch.setattr(keel.training.train, "estimate_epoch_seconds", lambda *a, **k: 10.0)  # 35 s fit 3 epochs
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
    import keel.training.train

    train, validation = splits
    monkeypatch.setattr(keel.training.train, "estimate_epoch_seconds", lambda *a, **k: 1e-6)  # plans all 20
    result = fit(train, validation, 24, TrainConfig(epochs=20, time_budget=0.001, batch_size=64, patience=100),
                 progress=False)
    assert result.planned_epochs == 20
    assert result.epochs_run == 1 and result.stopped_early and result.stop_reason == "time budget"


def test_the_epoch_estimate_leaves_the_model_and_the_random_generators_alone(splits):
    from keel.models.networks import build_model
    from keel.training.train import estimate_epoch_seconds, plan_epochs

    train, validation = splits
    config = TrainConfig(batch_size=64, time_budget=60, epochs=40)
    torch.manual_seed(0)
    model = build_model("cnn", 1, 28, 28, 24)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    seconds = estimate_epoch_seconds(model, train, validation, config, torch.device("cpu"), "fp32")
    assert 1e-4 < seconds < 30  # 6 steps of 64 real images and a validation pass on 96
    assert torch.equal(torch.get_rng_state(), rng)
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert plan_epochs(config, 7.0) == 8 and plan_epochs(config, 0.5) == 40 and plan_epochs(config, 100.0) == 1
    assert plan_epochs(TrainConfig(epochs=5, time_budget=0), 100.0) == 5


def test_a_resumed_budgeted_run_keeps_its_plan_and_ends_with_the_same_weights(tmp_path, splits, monkeypatch):
    import keel.training.train

    config = TrainConfig(epochs=40, time_budget=30, batch_size=64, patience=100)
    monkeypatch.setattr(keel.training.train, "estimate_epoch_seconds", lambda *a, **k: 10.0)  # plans 3
    # The machine got faster: a fresh plan would now fit 15 epochs; the resumed run keeps its 3.
    faster = lambda: monkeypatch.setattr(keel.training.train, "estimate_epoch_seconds", lambda *a, **k: 2.0)  # noqa: E731
    straight, resumed = _straight_and_resumed(tmp_path, splits, config, before_resume=faster)
    assert straight.planned_epochs == resumed.planned_epochs == 3
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_run == 3
    assert [h["learning_rate"] for h in resumed.history] == [h["learning_rate"] for h in straight.history]
    _assert_same_weights(straight, resumed)


def test_label_smoothing_changes_the_training_loss():
    from torch import nn

    from keel.training.train import _train_step

    targets = torch.tensor([0, 3, 5, 7])
    confident = 20.0 * torch.nn.functional.one_hot(targets, 24).float()

    class Fixed(nn.Module):  # confident, correct logits whatever the input
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.zeros(24))

        def forward(self, x):
            return confident + self.bias

    losses = {}
    for smoothing in (0.0, 0.1):
        model = Fixed()
        config = TrainConfig(label_smoothing=smoothing, augment={"enabled": False})
        loss, _ = _train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), torch.zeros(4, 1, 28, 28, dtype=torch.uint8),
                              targets, config, torch.device("cpu"), "fp32", torch.Generator())
        losses[smoothing] = loss.item()
    assert losses[0.0] < 1e-6
    # 0.1 of the target mass spread over 24 classes: 0.1 x 23/24 x 20 = 1.92 above the plain loss.
    assert losses[0.1] == pytest.approx(0.1 * 23 / 24 * 20, abs=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: --device cuda is right here")
def test_device_cuda_without_a_gpu_is_a_config_error():
    from keel.core.errors import ConfigError
    from keel.training.train import select_device

    with pytest.raises(ConfigError, match=r"^--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu"):
        select_device("cuda")
    assert select_device("auto") == torch.device("cpu")


def test_an_unknown_model_is_a_config_error():
    from keel.core.errors import ConfigError
    from keel.models.networks import build_model

    with pytest.raises(ConfigError, match=r"^unknown model 'resnet9000'; choose one of mlp, cnn, cnn-wide, vgg16, resnet18, "):
        build_model("resnet9000", 1, 28, 28, 24)


_HOLDER = """
import sys
from pathlib import Path
from keel.stages.pipeline import hold_run_lock
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
