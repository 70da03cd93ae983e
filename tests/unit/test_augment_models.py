import torch

from keel.data.augment import augment_batch
from keel.core.config import AugmentConfig
from keel.models.networks import Dropout, build_model, inference_model


def _images(n=16):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 1, 28, 28, generator=g)


def test_augmentation_keeps_shape_and_range_and_is_seeded():
    x = _images()
    a = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))
    b = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, x)


def test_zero_strength_augmentation_is_the_identity():
    x = _images()
    still = AugmentConfig(rotation_degrees=0, crop_scale_min=1, crop_scale_max=1, brightness=0, contrast=0,
                          translate=0, scale_min=1, scale_max=1, shear_degrees=0)
    torch.testing.assert_close(augment_batch(x, still), x, atol=1e-5, rtol=0)
    assert augment_batch(x, AugmentConfig(enabled=False)) is x


def test_horizontal_flip_is_off_by_default_and_flips_when_on():
    x = _images(64)
    flip_only = AugmentConfig(rotation_degrees=0, crop_scale_min=1, crop_scale_max=1, brightness=0, contrast=0,
                              translate=0, scale_min=1, scale_max=1, shear_degrees=0, horizontal_flip=True)
    out = augment_batch(x, flip_only, torch.Generator().manual_seed(0))
    flipped = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x)]
    same = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x)]
    assert all(f or s for f, s in zip(flipped, same)) and 10 < sum(flipped) < 54
    assert AugmentConfig().horizontal_flip is False


def test_dropout_drops_p_and_rescales():
    d = Dropout(0.2)
    y = d(torch.ones(400, 1000))
    assert abs((y == 0).float().mean().item() - 0.2) < 0.005
    assert abs(y.mean().item() - 1.0) < 0.01
    d.eval()
    x = torch.randn(3, 4)
    assert d(x) is x
    cl = torch.ones(8, 5, 3, 3).contiguous(memory_format=torch.channels_last)
    d.train()
    assert d(cl).is_contiguous(memory_format=torch.channels_last)


def test_architectures_give_one_logit_per_class():
    x = _images(4)
    for name in ("mlp", "cnn", "cnn-wide"):
        assert build_model(name, 1, 28, 28, 24)(x).shape == (4, 24)
    mlp_sizes = [p.shape for p in build_model("mlp", 1, 28, 28, 10).parameters()]
    assert mlp_sizes[0] == (512, 784) and mlp_sizes[2] == (512, 512)


def test_conv_block_matches_the_course_order():
    """Pool-then-ReLU (and no Dropout(0)) computes exactly what the course's block computes."""
    from torch import nn

    from keel.models.networks import ConvBlock

    torch.manual_seed(0)
    block = ConvBlock(1, 25, 0.0).eval()
    course = nn.Sequential(block[0], block[1], nn.ReLU(), nn.Dropout(0.0), nn.MaxPool2d(2, stride=2)).eval()
    x = torch.randn(8, 1, 28, 28, requires_grad=True)
    torch.testing.assert_close(block(x), course(x))
    grad_ours = torch.autograd.grad(block(x).sum(), x)[0]
    grad_course = torch.autograd.grad(course(x).sum(), x)[0]
    torch.testing.assert_close(grad_ours, grad_course)


def _blob(n=64, size=28, half=3):
    """`n` copies of a bright square of side 2*half+1 in the middle of a dark frame."""
    x = torch.zeros(n, 1, size, size)
    c = size // 2
    x[:, :, c - half:c + half + 1, c - half:c + half + 1] = 1.0
    return x


def _centre_and_spread(images):
    """Each image's centre of mass (x, y) in pixels and its RMS distance from that centre."""
    mass = images.sum(dim=(1, 2, 3))
    coords = torch.arange(images.shape[-1], dtype=images.dtype)
    cx = (images.sum(dim=(1, 2)) * coords).sum(-1) / mass
    cy = (images.sum(dim=(1, 3)) * coords).sum(-1) / mass
    dx2 = (images.sum(dim=(1, 2)) * (coords - cx[:, None]) ** 2).sum(-1) / mass
    dy2 = (images.sum(dim=(1, 3)) * (coords - cy[:, None]) ** 2).sum(-1) / mass
    return cx, cy, (dx2 + dy2).sqrt()


STILL = dict(rotation_degrees=0, crop_scale_min=1, crop_scale_max=1, brightness=0, contrast=0,
             translate=0, scale_min=1, scale_max=1, shear_degrees=0)


def test_translation_shifts_within_the_asked_fraction():
    x = _blob()
    cx0, cy0, spread0 = _centre_and_spread(x)
    out = augment_batch(x, AugmentConfig(**{**STILL, "translate": 0.2}), torch.Generator().manual_seed(0))
    cx, cy, spread = _centre_and_spread(out)
    shift = torch.maximum((cx - cx0).abs(), (cy - cy0).abs())
    assert shift.max() <= 0.2 * 28 + 0.5 and (shift > 2.0).float().mean() > 0.5  # up to 5.6 px, mostly over 2
    torch.testing.assert_close(spread, spread0, atol=0.3, rtol=0)  # moved, not resized
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1


def test_scale_zooms_out_and_in():
    x = _blob()
    _, _, spread0 = _centre_and_spread(x)
    for zoom in (0.5, 2.0):
        out = augment_batch(x, AugmentConfig(**{**STILL, "scale_min": zoom, "scale_max": zoom}))
        _, _, spread = _centre_and_spread(out)
        torch.testing.assert_close(spread / spread0, torch.full_like(spread, zoom), atol=0.12 * zoom, rtol=0)
    ranged = augment_batch(x, AugmentConfig(**{**STILL, "scale_min": 0.8, "scale_max": 1.2}), torch.Generator().manual_seed(0))
    ratio = _centre_and_spread(ranged)[2] / spread0
    assert ratio.min() < 0.9 and ratio.max() > 1.1 and ratio.min() > 0.7 and ratio.max() < 1.3


def test_shear_slants_a_vertical_bar():
    x = torch.zeros(32, 1, 28, 28)
    x[:, :, 4:24, 13:15] = 1.0
    out = augment_batch(x, AugmentConfig(**{**STILL, "shear_degrees": 20}), torch.Generator().manual_seed(0))
    coords = torch.arange(28.0)
    top, bottom = out[:, 0, 4:9], out[:, 0, 19:24]
    top_x = (top.sum(1) * coords).sum(-1) / top.sum((1, 2))
    bottom_x = (bottom.sum(1) * coords).sum(-1) / bottom.sum((1, 2))
    slant = top_x - bottom_x  # 15 rows apart: tan(20 deg) x 15 = 5.5 px at most
    assert slant.abs().max() < 6.0 and (slant.abs() > 1.0).float().mean() > 0.5
    assert (slant > 0).any() and (slant < 0).any()


def test_the_folded_inference_model_computes_the_trained_model_in_fp32():
    """inference_model (batch-norm folded into the convolutions, dropout gone, ReLU after the
    pool) gives the eval-mode training model's logits in fp32."""
    torch.manual_seed(0)
    x = torch.rand(32, 1, 28, 28)
    for name in ("cnn", "cnn-wide", "mlp"):
        model = build_model(name, 1, 28, 28, 24)
        model.train()
        for _ in range(3):  # batch-norm statistics and affine parameters that are not the identity
            model(torch.rand(64, 1, 28, 28) * 2)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.weight.uniform_(0.5, 1.5)
                    module.bias.uniform_(-0.2, 0.2)
        model.eval()
        folded = inference_model(model)
        assert not any(isinstance(m, (Dropout, torch.nn.BatchNorm2d)) for m in folded.modules())
        with torch.no_grad():
            torch.testing.assert_close(folded(x), model(x), atol=1e-5, rtol=1e-5, msg=name)
            channels_last = x.contiguous(memory_format=torch.channels_last)
            torch.testing.assert_close(folded.to(memory_format=torch.channels_last)(channels_last), model(x),
                                       atol=1e-5, rtol=1e-5, msg=name)
