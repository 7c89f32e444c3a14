"""The network's structure, sizes and switches."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.network import Conv3d, FSDiffRegNet, parameter_count
from FSDiffRegLib.model.predict import predict


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
