import numpy as np
import pytest
import torch

from keel.config import TrainConfig, load_dataset_config
from keel.datasets import ingest
from keel.evaluate import classification_metrics
from keel.train import fit, predict_logits, select_precision, training_splits


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
    train, validation = splits
    config = TrainConfig(epochs=3, batch_size=64, patience=10)
    straight = fit(train, validation, 24, config, checkpoint_path=tmp_path / "a.pt", progress=False)

    def stop_after_first(epoch, metrics, model):
        if epoch == 1:
            raise Interrupted

    with pytest.raises(Interrupted):
        fit(train, validation, 24, config, checkpoint_path=tmp_path / "b.pt", on_epoch_end=stop_after_first, progress=False)
    resumed = fit(train, validation, 24, config, checkpoint_path=tmp_path / "b.pt", progress=False)
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_run == 3
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
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
