"""Backbones: pretrained weights from a local file or the torchvision cache, never downloaded."""

import pytest
import torch
import torchvision

from keel.core.errors import ConfigError
from keel.core.config import BACKBONES
from keel.models.transfer import ParentModel, build_transfer, cached_weights_path, transfer_from


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


def test_a_pixel_model_as_parent_is_a_config_error_and_an_image_model_lends_its_features():
    from keel.models.networks import build_model

    pixel = ParentModel("models:/keel-sign-mnist/3", build_model("cnn", 1, 28, 28, 24), {"architecture": "cnn"})
    with pytest.raises(ConfigError, match=r"^models:/keel-sign-mnist/3 is a cnn pixel model; only image models trained by "
                                          r"Keel on image folders can serve as backbones"):
        transfer_from(pixel, 6, 64)
    network, _ = build_transfer("mobilenet_v3_small", 6, 32, weights="none")
    image = ParentModel("models:/fruits@champion", network, {"architecture": "transfer",
                                                             "build": {"backbone": "mobilenet_v3_small", "image_size": 32}})
    child, build = transfer_from(image, 3, 48)
    assert build == {"backbone": "mobilenet_v3_small", "image_size": 48} and child.head.out_features == 3
    for key, value in network.features.state_dict().items():  # a copy of the parent's trained features
        assert torch.equal(child.features.state_dict()[key], value), key
    assert child.features is not network.features
