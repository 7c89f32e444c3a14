"""The heart head and the blur outside the heart (work in progress on branch heart-head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from FSDiffRegLib.config import Config
from FSDiffRegLib.heart import HeartHead, blurred_outside, decoder_features
from FSDiffRegLib.network import FSDiffRegNet


def test_the_head_on_each_blocks_resolution_equals_the_head_on_features_resized_first():
    torch.manual_seed(0)
    model = FSDiffRegNet(Config.load("cpu")).eval()
    moving, fixed = torch.rand(1, 1, 8, 32, 32) * 2 - 1, torch.rand(1, 1, 8, 32, 32) * 2 - 1
    features = decoder_features(model, moving, fixed)
    head = HeartHead([f.shape[1] for f in features])
    with torch.no_grad():
        head.bias.normal_()
        upsampled = torch.cat([F.adaptive_avg_pool3d(f, (4, 16, 16)) if f.shape[2] > 4 else
                               F.interpolate(f, size=(4, 16, 16), mode="trilinear", align_corners=True)
                               for f in features], dim=1)
        weight = torch.cat([p.weight for p in head.project], dim=1)
        direct = head.out(F.relu(F.conv3d(upsampled, weight) + head.bias))
        assert torch.allclose(head(features), direct, atol=1e-5)


def test_the_flow_is_kept_at_the_heart_and_blurred_away_from_it():
    torch.manual_seed(0)
    flow = torch.randn(1, 3, 16, 64, 64)
    heart = torch.zeros(1, 1, 16, 64, 64)
    heart[:, :, 4:12, 20:44, 20:44] = 1.0
    out = blurred_outside(flow, heart)
    assert torch.equal(out[:, :, 6:10, 26:38, 26:38], flow[:, :, 6:10, 26:38, 26:38])
    far = (slice(None), slice(None), slice(None), slice(0, 8), slice(0, 8))
    assert out[far].std() < 0.2 * flow[far].std()
