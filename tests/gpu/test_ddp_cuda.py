"""Data-parallel training on GPUs (keel.training.distributed): NCCL, one process per GPU.

The two-process tests need two CUDA GPUs and say so when a machine has one; where there is no
GPU at all, the tier skips them with NO_GPU (tests/conftest.py)."""

import time

import pytest
import torch

from keel.core.config import TrainConfig, load_dataset_config
from keel.core.errors import ConfigError
from keel.modalities import ingest
from keel.training.distributed import launch
from keel.training.train import train
from tests.conftest import NO_GPU
from tests.interrupt import Killed

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
# Only where CUDA is: elsewhere this reason would replace NO_GPU, which the tier check accepts.
two_gpus = pytest.mark.skipif(torch.cuda.is_available() and torch.cuda.device_count() < 2,
                              reason=f"NCCL data-parallel training needs 2 CUDA GPUs; "
                              f"{torch.cuda.device_count() if torch.cuda.is_available() else 0} visible")


def train_rank(device, version, config, checkpoint, kill_after_epoch):
    """What each rank runs (module-level: the spawned processes unpickle it by name)."""
    def kill(epoch, metrics, model):
        if epoch == kill_after_epoch:
            raise Killed
    return train(version, config, device, checkpoint, on_epoch_end=kill if kill_after_epoch else None, progress=False)


@pytest.fixture
def version(tmp_path, small_config):
    return ingest(load_dataset_config(small_config), root=tmp_path / "versions").version


def test_more_processes_than_gpus_is_refused_in_one_sentence(version, cuda):
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=f"--nproc {count + 1} asks for {count + 1} GPUs but {count}"):
        launch(count + 1, cuda, train_rank, version, TrainConfig(), None, 0)


@two_gpus
def test_two_nccl_processes_train_what_one_gpu_trains_and_report_their_speed(version, cuda):
    config = TrainConfig(model="mlp", epochs=3, batch_size=64, precision="fp32", time_budget=0,
                         augment={"enabled": False})
    started = time.perf_counter()
    one = train(version, config, cuda, progress=False)
    one_seconds = time.perf_counter() - started
    started = time.perf_counter()
    two = launch(2, cuda, train_rank, version, config, None, 0)
    two_seconds = time.perf_counter() - started
    print(f"\none GPU: {one.loop_seconds:.2f} s loop, {one_seconds:.2f} s call; two GPUs (NCCL): "
          f"{two.loop_seconds:.2f} s loop, {two_seconds:.2f} s call with the processes' start")
    for a, b in zip(one.history, two.history):  # GPU kernels add in their own order: close, not equal
        for key in ("train_loss", "val_loss", "val_accuracy"):
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-3), key


@two_gpus
def test_a_two_gpu_run_killed_after_an_epoch_resumes_on_one_gpu(version, cuda, tmp_path):
    config = TrainConfig(epochs=2, batch_size=64, time_budget=0)
    with pytest.raises(Killed):
        launch(2, cuda, train_rank, version, config, tmp_path / "last.pt", 1)
    resumed = train(version, config, cuda, tmp_path / "last.pt", progress=False)
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_run == 2 and resumed.device == "cuda"
