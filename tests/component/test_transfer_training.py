"""Fine-tuning a backbone on a small real image folder through the one training loop:
checkpoints, resume, and the random state a resume restores."""

import pytest
import torch

from keel.core.config import TrainConfig, load_dataset_config
from keel.modalities import ingest
from keel.training.train import train
from tests.image_data import fruits_config, small_fruits
from tests.interrupt import Killed, kill_after

CPU = torch.device("cpu")
TIMINGS = ("epoch_seconds", "images_per_second")


@pytest.fixture
def fruits(tmp_path, keel_home):
    """24 training and 12 evaluation photos of 6 classes, stored at 32 x 32."""
    root = small_fruits(tmp_path / "photos")
    return ingest(load_dataset_config(fruits_config(tmp_path, root, size=32)), tmp_path / "versions").version


def test_an_interrupted_fine_tuning_resumes_after_its_last_checkpoint(tmp_path, fruits):
    config = TrainConfig(model="resnet18", image_size=32, head_epochs=1, epochs=3, batch_size=8, workers=0)
    checkpoint = tmp_path / "last.pt"
    with pytest.raises(Killed):
        train(fruits, config, CPU, checkpoint, on_epoch_end=kill_after(2))
    seen = []
    result = train(fruits, config, CPU, checkpoint, on_epoch_end=lambda e, m, _: seen.append(e))
    assert result.resumed_from_epoch == 2 and seen == [3, 4] and result.epochs_run == 4
    assert [h["phase"] for h in result.history] == [1, 2, 2, 2] and result.phase_boundary == 1
    assert result.planned_epochs == 4 and result.pretrained == "none"
    assert result.build == {"backbone": "resnet18", "image_size": 32}


@pytest.mark.parametrize("workers", [0, 1])
def test_a_resumed_fine_tuning_ends_where_an_uninterrupted_one_ends(tmp_path, fruits, workers):
    """Killed in phase 2 and resumed in a process whose random state is another: the same
    history and the same weights as the run that was never stopped (photos augmented in this
    process from torch's generator, or in a worker seeded from the DataLoader's)."""
    config = TrainConfig(model="resnet18", image_size=32, head_epochs=2, epochs=3, batch_size=8, workers=workers)
    straight = train(fruits, config, CPU, tmp_path / "a.pt")
    with pytest.raises(Killed):
        train(fruits, config, CPU, tmp_path / "b.pt", on_epoch_end=kill_after(3))
    torch.manual_seed(1234)  # another process: its own random state
    resumed = train(fruits, config, CPU, tmp_path / "b.pt")
    assert resumed.resumed_from_epoch == 3 and resumed.epochs_run == straight.epochs_run == 5
    for a, b in zip(straight.history, resumed.history, strict=True):
        assert {k: v for k, v in b.items() if k not in TIMINGS} == pytest.approx(
            {k: v for k, v in a.items() if k not in TIMINGS}, rel=1e-5), a["epoch"]
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter:UserWarning")
def test_a_checkpoint_resumed_on_another_device_restores_the_random_state_from_cpu_bytes(tmp_path, fruits):
    """A checkpoint written on the CPU and resumed for another device (the meta device stands
    in for a GPU: nothing computes on it when the run has finished) restores torch's random
    state from the CPU byte tensors saved; loaded onto the target device, set_rng_state
    would reject them."""
    config = TrainConfig(model="resnet18", image_size=32, head_epochs=1, epochs=1, batch_size=8, workers=0)
    train(fruits, config, CPU, tmp_path / "last.pt")
    saved = torch.load(tmp_path / "last.pt", map_location="cpu", weights_only=True)
    torch.manual_seed(999)
    result = train(fruits, config, torch.device("meta"), tmp_path / "last.pt")
    assert result.resumed_from_epoch == 2 and result.device == "meta"
    assert saved["torch_rng"].device.type == "cpu" and saved["torch_rng"].dtype == torch.uint8
    assert torch.equal(torch.get_rng_state(), saved["torch_rng"])
