"""Backbones: pretrained weights from a local file or the torchvision cache, never downloaded."""

import pytest
import torch
import torchvision

from keel.core.errors import ConfigError
from keel.training.transfer import BACKBONES, build_transfer, cached_weights_path


def _saved_weights(tmp_path, name="mobilenet_v3_small"):
    torch.manual_seed(7)
    reference = getattr(torchvision.models, name)(weights=None)
    path = tmp_path / f"{name}-weights.pth"
    torch.save(reference.state_dict(), path)
    return reference, path


def test_a_weights_file_loads_through_the_users_path(tmp_path):
    reference, path = _saved_weights(tmp_path)
    model, source = build_transfer("mobilenet_v3_small", n_classes=6, image_size=64, weights=str(path))
    assert source.startswith("file:mobilenet_v3_small-weights.pth@")
    for key, value in reference.features.state_dict().items():
        assert torch.equal(model.features.features.state_dict()[key], value), key
    assert model.head.out_features == 6 and model(torch.rand(2, 3, 80, 80)).shape == (2, 6)


def test_the_torchvision_cache_is_used_when_it_holds_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert cached_weights_path("mobilenet_v3_small") is None
    _, source = build_transfer("mobilenet_v3_small", 6, 64)
    assert source == "none"  # nothing there, nothing downloaded: from scratch
    url = torchvision.models.get_model_weights("mobilenet_v3_small").DEFAULT.url
    cache = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cache.parent.mkdir(parents=True)
    reference, path = _saved_weights(tmp_path)
    path.rename(cache)
    model, source = build_transfer("mobilenet_v3_small", 6, 64)
    assert source.startswith("torch-cache:")
    key = next(iter(reference.features.state_dict()))
    assert torch.equal(model.features.features.state_dict()[key], reference.features.state_dict()[key])


@pytest.mark.parametrize("name", BACKBONES)
def test_every_backbone_gets_a_new_head(name):
    model, source = build_transfer(name, n_classes=6, image_size=32, weights="none")
    assert source == "none" and model.eval()(torch.rand(1, 3, 48, 48)).shape == (1, 6)


def test_a_missing_weights_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.pth: weights file not found; pass a local \.pth file or leave --weights out"):
        build_transfer("resnet18", 6, 64, weights=str(tmp_path / "nope.pth"))


def test_a_weights_file_that_is_not_weights_or_not_for_the_backbone_is_a_clear_error(tmp_path):
    junk = tmp_path / "notes.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match=r"notes\.pth: not a PyTorch weights file \(.+\); pass a \.pth state dict"):
        build_transfer("resnet18", 6, 64, weights=str(junk))
    _, other = _saved_weights(tmp_path)  # mobilenet_v3_small's weights offered to resnet18
    with pytest.raises(ConfigError, match=r"mobilenet_v3_small-weights\.pth: these weights do not fit resnet18 \(.+\); "
                                          r"pass weights saved from a resnet18"):
        build_transfer("resnet18", 6, 64, weights=str(other))


def test_an_unknown_backbone_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^unknown backbone 'resnet9000'; choose one of vgg16, resnet18"):
        build_transfer("resnet9000", 6, 64, weights="none")


def test_an_interrupted_fine_tuning_resumes_after_its_last_checkpoint(tmp_path, keel_home):
    from keel.core.config import TrainConfig, load_dataset_config
    from keel.data.datasets import ingest
    from keel.training.transfer import fit_transfer
    from tests.image_data import fruits_config, small_fruits

    root = small_fruits(tmp_path / "photos")
    version = ingest(load_dataset_config(fruits_config(tmp_path, root)), tmp_path / "versions").version
    config = TrainConfig(model="resnet18", image_size=32, head_epochs=1, epochs=3, batch_size=8, workers=0)
    checkpoint = tmp_path / "last.pt"

    class Killed(Exception):
        pass

    def kill_after_epoch_2(epoch, metrics, model):
        if epoch == 2:
            raise Killed  # after epoch 2's checkpoint was written, as a SIGKILL would be
    with pytest.raises(Killed):
        fit_transfer(version, config, torch.device("cpu"), checkpoint, on_epoch_end=kill_after_epoch_2)
    seen = []
    result = fit_transfer(version, config, torch.device("cpu"), checkpoint, on_epoch_end=lambda e, m, _: seen.append(e))
    assert result.resumed_from_epoch == 2 and seen == [3, 4] and result.epochs_run == 4
    assert [h["phase"] for h in result.history] == [1, 2, 2, 2] and result.phase_boundary == 1
