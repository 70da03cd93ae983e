"""Pure pieces of training: device and precision choice, one optimizer step, the metrics, and
the user errors that must be ConfigErrors (exit 2, never retried)."""

import numpy as np
import pytest
import torch

from keel.core.config import TrainConfig
from keel.models.device import cpu_has_bf16, select_precision
from keel.training.evaluate import classification_metrics
from keel.training.phases import train_step
from keel.training.train import single_phase


def test_precision_selection():
    assert select_precision("fp32", torch.device("cpu")) == "fp32"
    assert select_precision("bf16", torch.device("cpu")) == "bf16"
    # auto: bf16 only where the CPU computes it natively (where autocast pays)
    assert select_precision("auto", torch.device("cpu")) == ("bf16" if cpu_has_bf16() else "fp32")


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


def test_label_smoothing_changes_the_training_loss():
    from torch import nn

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
        phase = single_phase(TrainConfig(label_smoothing=smoothing), batches=list)
        loss, _ = train_step(model, phase, torch.optim.SGD(model.parameters(), lr=0.0), torch.zeros(4, 1, 28, 28),
                             targets, torch.device("cpu"), "fp32")
        losses[smoothing] = loss.item()
    assert losses[0.0] < 1e-6
    # 0.1 of the target mass spread over 24 classes: 0.1 x 23/24 x 20 = 1.92 above the plain loss.
    assert losses[0.1] == pytest.approx(0.1 * 23 / 24 * 20, abs=1e-3)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: --device cuda is right here")
def test_device_cuda_without_a_gpu_is_a_config_error():
    from keel.core.errors import ConfigError
    from keel.models.device import select_device

    with pytest.raises(ConfigError, match=r"^--device cuda was asked for but no CUDA GPU is visible; use --device auto or cpu"):
        select_device("cuda")
    assert select_device("auto") == torch.device("cpu")


def test_an_unknown_model_is_a_config_error():
    from keel.core.errors import ConfigError
    from keel.models.networks import build_model

    with pytest.raises(ConfigError, match=r"^unknown model 'resnet9000'; choose one of mlp, cnn, cnn-wide, vgg16, resnet18, "):
        build_model("resnet9000", 1, 28, 28, 24)
