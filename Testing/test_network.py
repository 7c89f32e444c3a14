"""The network's structure, sizes and switches."""

from __future__ import annotations

import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.imaging.imageio import read_image
from FSDiffRegLib.imaging.metrics import heart_labels_dice
from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.network import (
    BF16_VARIABLE,
    Conv3d,
    FSDiffRegNet,
    native_bf16,
    parameter_count,
    use_bf16,
)
from FSDiffRegLib.model.predict import predict
from FSDiffRegLib.model.weights import load_model
from FSDiffRegLib.pipeline.register import register_images


@pytest.mark.parametrize("fdg", [True, False])
def test_outputs_have_the_input_size(fdg):
    cfg = Config(fdg=fdg)
    net = FSDiffRegNet(cfg)
    m, f = torch.randn(1, 1, 16, 32, 32), torch.randn(1, 1, 16, 32, 32)
    score, flow = net(m, f, f, torch.tensor([100]))
    assert score.shape == (1, 1, 16, 32, 32) and flow.shape == (1, 3, 16, 32, 32)


def test_fdg_flows_come_from_every_registration_block():
    net = FSDiffRegNet(Config())
    assert len(net.flow_heads) == len(net.cfg.channel_mults) * (net.cfg.res_blocks + 1) == 8
    assert all(head.attn is not None for head in net.flow_heads)
    assert len(FSDiffRegNet(Config(fdg=False)).flow_heads) == 0


def test_parameter_counts_of_the_configurations():
    """The paper-size network has the official widths: about 1.3 M parameters."""
    assert parameter_count(FSDiffRegNet(Config.load("paper"))) == 1_333_733
    assert parameter_count(FSDiffRegNet(Config.load("cpu"))) == 1_333_733
    assert parameter_count(FSDiffRegNet(Config(fdg=False))) < 1_333_733


def test_registration_decoder_sees_the_diffusion_features():
    """With FDG, changing only the diffusion decoder changes the flow."""
    torch.manual_seed(0)
    net = FSDiffRegNet(Config()).eval()
    m, f = torch.randn(1, 1, 16, 32, 32), torch.randn(1, 1, 16, 32, 32)
    for head in net.flow_heads:
        torch.nn.init.normal_(head.conv.weight, std=0.1)
    _, before = predict(net, m, f)
    with torch.no_grad():
        for p in net.diff_decoder.parameters():
            p.add_(0.1 * torch.randn_like(p))
    _, after = predict(net, m, f)
    assert (before - after).abs().max() > 1e-4


def test_unknown_configuration_keys_are_refused(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"base_widht": 8}')
    with pytest.raises(ValueError, match="base_widht"):
        Config.load(path)


@pytest.mark.parametrize("kernel, stride, batch", [(3, 1, 1), (3, 2, 1), (1, 1, 1), (3, 1, 2)])
def test_the_onednn_convolution_equals_torch_conv3d(kernel, stride, batch):
    torch.manual_seed(0)
    conv = Conv3d(4, 6, kernel, stride=stride, padding=kernel // 2)
    x = torch.randn(batch, 4, 8, 12, 10, requires_grad=True)
    out = conv(x)
    expected = F.conv3d(x, conv.weight, conv.bias, stride, kernel // 2)
    assert out.shape == expected.shape and torch.allclose(out, expected, atol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (x, conv.weight))
    for got, want in zip(grads, torch.autograd.grad(expected.square().sum(), (x, conv.weight))):
        assert torch.allclose(got, want, atol=1e-4)


bf16_needed = pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(),
                                 reason="this CPU has no oneDNN bfloat16 convolution")


@bf16_needed
def test_bf16_convolutions_only_at_inference():
    torch.manual_seed(0)
    conv = Conv3d(8, 8, 3, padding=1).to(memory_format=torch.channels_last_3d)
    x = torch.randn(1, 8, 6, 20, 20).to(memory_format=torch.channels_last_3d)
    full = conv(x).detach()
    use_bf16(conv, True)
    assert torch.equal(conv(x).detach(), full)  # with gradients (training): float32
    with torch.no_grad():
        half = conv(x)
    assert half.dtype == torch.float32 and not torch.equal(half, full)
    assert torch.allclose(half, full, rtol=0.02, atol=0.05)


def test_float32_unless_bf16_is_asked_for(monkeypatch, untrained_weights):
    monkeypatch.delenv(BF16_VARIABLE, raising=False)
    assert not native_bf16()
    model, about = load_model(untrained_weights)
    assert not any(getattr(module, "bf16", False) for module in model.modules()) and about["precision"] == "float32"
    monkeypatch.setenv(BF16_VARIABLE, "1")
    model, about = load_model(untrained_weights)
    assert all(module.bf16 == native_bf16() for module in model.modules() if isinstance(module, Conv3d))
    assert about["precision"] == ("bfloat16" if native_bf16() else "float32")


@bf16_needed
@pytest.mark.parametrize("direction", ["es-ed", "ed-es"])
def test_bf16_leaves_the_dice_of_092_within_1e_3(validation_pair, bundled_weights, direction):
    pair = acdc.directed(validation_pair, direction)
    fixed, moving = read_image(pair.fixed, "fixed"), read_image(pair.moving, "moving")
    moving_labels = sitk.ReadImage(str(pair.moving_labels))
    fixed_labels = sitk.GetArrayFromImage(sitk.ReadImage(str(pair.fixed_labels)))
    model, _ = load_model(bundled_weights)
    dice = {}
    for on in (False, True):
        use_bf16(model, on)
        result = register_images(fixed, moving, model, torch.device("cpu"), moving_labels)
        dice[on] = heart_labels_dice(sitk.GetArrayFromImage(result.warped_labels), fixed_labels)
    assert pair.patient == "patient092"
    for name in ("LV", "Myo", "RV", "mean"):
        assert abs(dice[True][name] - dice[False][name]) <= 1e-3, (name, dice)
