"""Resuming training from a checkpoint written on the GPU: the random states come back as CPU
byte tensors and set the CUDA generators (loaded onto the GPU, set_rng_state rejected them)."""

import pytest
import torch

from keel.core.config import TrainConfig, load_dataset_config
from keel.data.batches import training_splits
from keel.modalities import ingest
from keel.training.train import fit, train
from tests.conftest import NO_GPU
from tests.image_data import fruits_config, small_fruits
from tests.interrupt import Killed, kill_after

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)


def _assert_cpu_random_state(path):
    saved = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("generator", "torch_rng", "cuda_rng"):
        assert saved[key].device.type == "cpu" and saved[key].dtype == torch.uint8, key


def test_a_pixel_run_killed_on_the_gpu_resumes_there(tmp_path, small_config, cuda):
    version = ingest(load_dataset_config(small_config), root=tmp_path / "v").version
    config = TrainConfig(epochs=3, batch_size=64, patience=10, precision="fp32", augment={"enabled": False})
    train_split, validation = training_splits(version, config, cuda)
    with pytest.raises(Killed):
        fit(train_split, validation, 24, config, checkpoint_path=tmp_path / "last.pt", on_epoch_end=kill_after(1),
            progress=False)
    _assert_cpu_random_state(tmp_path / "last.pt")
    resumed = fit(train_split, validation, 24, config, checkpoint_path=tmp_path / "last.pt", progress=False)
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_run == 3 and resumed.device == "cuda"
    straight = fit(train_split, validation, 24, config, progress=False)
    # The same random numbers; GPU kernels may add in another order, so close, not equal.
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a.float(), b.float(), rtol=1e-3, atol=1e-3, msg=name)


def test_a_fine_tuning_killed_on_the_gpu_resumes_there(tmp_path, keel_home, cuda):
    root = small_fruits(tmp_path / "photos")
    version = ingest(load_dataset_config(fruits_config(tmp_path, root, size=32)), tmp_path / "versions").version
    config = TrainConfig(model="resnet18", image_size=32, head_epochs=1, epochs=2, batch_size=8, workers=1)
    with pytest.raises(Killed):
        train(version, config, cuda, tmp_path / "last.pt", on_epoch_end=kill_after(2))
    _assert_cpu_random_state(tmp_path / "last.pt")
    resumed = train(version, config, cuda, tmp_path / "last.pt")
    assert resumed.resumed_from_epoch == 2 and resumed.epochs_run == 3 and resumed.device == "cuda"
    assert [h["phase"] for h in resumed.history] == [1, 2, 2]
