"""Data-parallel training (keel.training.distributed, `keel train --nproc N`): two gloo processes
on the CPU, on the 480-row Sign-MNIST subset.

Two processes train on the same global batches as one (each on half of every batch) with the
gradients averaged, so
- without batch-norm, dropout or augmentation (mlp, fp32), they compute what one process
  computes up to float rounding: the mean of two half-batch gradients is the full batch's sum
  taken in another order, and validation sums are reduced instead of averaged at once. Measured
  here: the same train losses to the last bit, validation losses within 1e-7, weights within
  2.3e-6 after 12 steps; the test allows 1e-5 relative (metrics) and 1e-4 (weights).
- with them (the default cnn, augmented, bf16 where the CPU has it), they differ from one
  process as another seed does: other dropout masks and augmentations, batch-norm statistics
  over half batches, bf16 gradients rounded per half. Measured here after one epoch, seeds 0-5
  of one process: train loss 3.29-3.46, validation loss 3.175-3.180, validation accuracy
  0.04-0.06 (1-3 of 48 rows); two processes moved them by at most 0.043, 0.0017 and one row.
  The test allows the seeds' spread: 0.2, 0.01 and 3 rows.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch

# Each rank process imports this module to find train_rank: what it imports at the top is paid
# by every launch. The stages (MLflow) and the command line (Prefect) are imported by the tests
# that use them.
from keel.core.config import TrainConfig, load_dataset_config
from keel.core.errors import ConfigError
from keel.modalities import ingest
from keel.training.distributed import launch, refuse_unsupported
from keel.training.train import train
from tests.conftest import REPO, write_dataset_config
from tests.interrupt import Killed, kill_after

CPU = torch.device("cpu")
METRICS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")


@pytest.fixture(scope="module")
def version(tmp_path_factory, small_rows):
    folder = tmp_path_factory.mktemp("ddp")
    csv = folder / "small.csv"
    small_rows.to_csv(csv, index=False)
    return ingest(load_dataset_config(write_dataset_config(folder, csv)), root=folder / "versions").version


def train_rank(device, version, config, checkpoint, on_epoch_end):
    """What each rank runs (module-level: the spawned processes unpickle it by name)."""
    return train(version, config, device, checkpoint, on_epoch_end=on_epoch_end, progress=False)


class KillAfter:
    """tests.interrupt.kill_after as an object that pickles: rank 0 calls it in its own process."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def __call__(self, epoch, metrics, model):
        if epoch == self.epoch:
            raise Killed  # after the epoch's checkpoint was written, as a SIGKILL would be


def _assert_same_weights(a, b, **tolerance):
    for (name, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        torch.testing.assert_close(y, x, msg=name, **tolerance)


def test_two_processes_train_what_one_process_trains(version):
    config = TrainConfig(model="mlp", epochs=2, batch_size=64, precision="fp32", time_budget=0,
                         augment={"enabled": False})
    one = train(version, config, CPU, progress=False)
    two = launch(2, CPU, train_rank, version, config, None, None)
    assert [h["epoch"] for h in two.history] == [1, 2]
    for a, b in zip(one.history, two.history):
        assert {k: b[k] for k in METRICS} == pytest.approx({k: a[k] for k in METRICS}, rel=1e-5, abs=1e-6)
    _assert_same_weights(one, two, rtol=1e-4, atol=1e-4)


def test_two_gloo_processes_register_one_model_with_the_metrics_of_one(keel_home, small_config):
    from keel.stages.evaluation import evaluate_stage
    from keel.stages.ingest import ingest_stage
    from keel.stages.registration import register_stage
    from keel.stages.runs import start_run_stage
    from keel.stages.training import train_stage
    from keel.tracking import client as tracking

    leftovers = set(Path(tempfile.gettempdir()).glob("keel-ddp-*"))
    version = ingest_stage(str(small_config))
    config = TrainConfig(epochs=1, batch_size=64)
    run = start_run_stage(str(small_config), version, config)
    two = train_stage(run, version, config, progress=False, nproc=2)
    # Rank 0 wrote the checkpoint and logged the epoch once; this process saved the model.
    assert sorted(p.name for p in Path(run.checkpoint_dir).iterdir()) == ["last.pt", "model.pt", "run.json"]
    client = tracking.client()
    assert [m.step for m in client.get_metric_history(run.run_id, "val_accuracy")] == [1]
    assert [m.value for m in client.get_metric_history(run.run_id, "processes")] == [2]
    registered = register_stage(run, version, two, evaluate_stage(run, version, two))
    assert [str(v.version) for v in client.search_model_versions(f"name='{registered.name}'")] == ["1"]
    assert set(Path(tempfile.gettempdir()).glob("keel-ddp-*")) <= leftovers  # the rendezvous folder is gone

    one = train_stage(start_run_stage(str(small_config), version, config), version, config, progress=False)
    (a,), (b,) = one.history, two.history
    assert abs(a["train_loss"] - b["train_loss"]) <= 0.2
    assert abs(a["val_loss"] - b["val_loss"]) <= 0.01
    assert abs(a["val_accuracy"] - b["val_accuracy"]) <= 3 / 48 + 1e-6


def test_a_killed_two_process_run_resumes_with_two_processes_and_with_one(version, tmp_path):
    config = TrainConfig(epochs=2, batch_size=64, time_budget=0)
    straight = launch(2, CPU, train_rank, version, config, tmp_path / "a.pt", None)
    with pytest.raises(Killed):  # rank 0's own exception, raised again here
        launch(2, CPU, train_rank, version, config, tmp_path / "b.pt", KillAfter(1))
    shutil.copyfile(tmp_path / "b.pt", tmp_path / "c.pt")

    resumed = launch(2, CPU, train_rank, version, config, tmp_path / "b.pt", None)
    assert resumed.resumed_from_epoch == 1 and [h["epoch"] for h in resumed.history] == [1, 2]
    for a, b in zip(straight.history, resumed.history):
        assert {k: b[k] for k in METRICS} == {k: a[k] for k in METRICS}
    _assert_same_weights(straight, resumed, rtol=0, atol=0)  # the same draws on every rank as uninterrupted

    alone = train(version, config, CPU, tmp_path / "c.pt", progress=False)  # the world size changed: 2 -> 1
    assert alone.resumed_from_epoch == 1 and alone.epochs_run == 2
    assert {k: alone.history[0][k] for k in METRICS} == {k: straight.history[0][k] for k in METRICS}


def test_a_killed_one_process_run_resumes_with_two(version, tmp_path):
    config = TrainConfig(epochs=2, batch_size=64, time_budget=0)
    with pytest.raises(Killed):
        train(version, config, CPU, tmp_path / "d.pt", on_epoch_end=kill_after(1), progress=False)
    first = torch.load(tmp_path / "d.pt", map_location="cpu", weights_only=True)["state"]["history"]
    resumed = launch(2, CPU, train_rank, version, config, tmp_path / "d.pt", None)
    assert resumed.resumed_from_epoch == 1 and resumed.epochs_run == 2
    assert resumed.history[0] == first[0] and resumed.history[1]["val_loss"] > 0  # epoch 1 as the checkpoint holds it


@pytest.mark.parametrize("nproc, dataset_format, fields, sentence", [
    (2, "text", {}, "--nproc 2: data-parallel training trains the pixel networks (cnn, mlp, cnn-wide) on pixel tables "
     "only; train image folders, transfer and text models with --nproc 1"),
    (2, "image-folder", {"model": "resnet18"}, "on pixel tables only"),
    (3, "csv", {"backbone": "models:/keel-fruits@champion"}, "on pixel tables only"),
    (4, "csv", {"batch_size": 2}, "--batch-size 2 is smaller than --nproc 4: each process trains on its share of "
     "every batch; use a batch size of at least 4"),
    (0, "csv", {}, "--nproc 0: give at least 1 process"),
], ids=["text", "photos", "transfer", "batch", "zero"])
def test_what_data_parallel_training_does_not_train_is_refused_in_one_sentence(nproc, dataset_format, fields, sentence):
    with pytest.raises(ConfigError) as refused:
        refuse_unsupported(nproc, TrainConfig(**fields), dataset_format)
    assert sentence in str(refused.value)


def test_pixel_networks_on_pixel_tables_are_accepted():
    for dataset_format in ("csv", "idx", "parquet"):
        for model in ("cnn", "mlp", "cnn-wide"):
            refuse_unsupported(4, TrainConfig(model=model, batch_size=4), dataset_format)
    refuse_unsupported(1, TrainConfig(model="resnet18"), "image-folder")  # one process trains everything


def test_keel_train_refuses_an_unfit_nproc_before_anything_runs(capsys, monkeypatch):
    from cli.main import main

    monkeypatch.chdir(REPO)
    assert main(["train", "--dataset", "fruits", "--nproc", "2"]) == 2
    assert "keel train: --nproc 2: data-parallel training trains the pixel networks" in capsys.readouterr().err
