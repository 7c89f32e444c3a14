"""The heart head: its features, its training, its file beside the weights, and the blur outside the heart."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from FSDiffRegLib.commands.cli import main
from FSDiffRegLib.defaults import HeartHeadTraining
from FSDiffRegLib.errors import WeightsError
from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.imaging.metrics import dice
from FSDiffRegLib.imaging.preprocess import prepare_pair
from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.heart_head import HeartHead, blurred_outside, head_inputs
from FSDiffRegLib.model.network import FSDiffRegNet
from FSDiffRegLib.model.weights import heart_head_path, load_model, save_heart_head, sha256
from FSDiffRegLib.resources import sample_pair
from FSDiffRegLib.training.heart_head_train import heart_labels_on_grid, pair_features, train_heart_head


def test_the_head_on_each_blocks_resolution_equals_the_head_on_features_resized_first():
    torch.manual_seed(0)
    model = FSDiffRegNet(Config.load("cpu")).eval()
    moving, fixed = torch.rand(1, 1, 8, 32, 32) * 2 - 1, torch.rand(1, 1, 8, 32, 32) * 2 - 1
    features = head_inputs(model, moving, fixed)
    assert len(features) == 2 * len(model.reg_decoder.block_channels) + 2
    head = HeartHead([f.shape[1] for f in features])
    with torch.no_grad():
        head.bias.normal_()
        resized = torch.cat([F.adaptive_avg_pool3d(f, (4, 16, 16)) if f.shape[2] > 4 else
                             F.interpolate(f, size=(4, 16, 16), mode="trilinear", align_corners=True)
                             for f in features], dim=1)
        weight = torch.cat([p.weight for p in head.project], dim=1)
        direct = head.out(F.relu(F.conv3d(resized, weight) + head.bias))
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


def test_the_bundled_head_finds_the_labelled_heart_of_the_sample(bundled_weights):
    model, about = load_model(bundled_weights)
    assert about["heart"] == heart_head_path(bundled_weights).name
    sample = sample_pair()
    fixed, moving = (sitk.ReadImage(str(sample[k])) for k in ("fixed", "moving"))
    prepared = prepare_pair(fixed, moving, model.cfg)
    m, f = (torch.from_numpy(a)[None, None] for a in (prepared.moving, prepared.fixed))
    found = model.heart_head.probability(head_inputs(model, m, f)).numpy() > 0.5
    truth = heart_labels_on_grid(sitk.ReadImage(str(sample["fixed_labels"])), prepared.grid).numpy() > 0.5
    assert dice(found, truth) > 0.8


def test_training_the_head_on_real_pairs_lowers_its_loss(data_dir):
    model, _ = load_model(None)
    pair = acdc.split(data_dir, "train")[0]
    features, heart = pair_features(model, pair)

    def loss(head: HeartHead) -> float:
        with torch.no_grad():
            logits = head(features)
            return float(F.binary_cross_entropy_with_logits(logits, F.adaptive_avg_pool3d(heart, logits.shape[2:])))

    untrained = HeartHead([f.shape[1] for f in features])
    untrained.standardise_on([features])
    trained = train_heart_head(model, [pair], HeartHeadTraining(steps=60, pairs=1))
    assert loss(trained) < 0.5 * loss(untrained)


@pytest.fixture()
def weights_copy(bundled_weights: Path, tmp_path: Path) -> Path:
    """The bundled weights and their head, copied with their checksums."""
    for path in (bundled_weights, heart_head_path(bundled_weights)):
        for file in (path, path.with_name(path.name + ".sha256")):
            shutil.copy(file, tmp_path / file.name)
    return tmp_path / bundled_weights.name


def test_weights_without_a_head_load_with_none(weights_copy):
    heart_head_path(weights_copy).unlink()
    model, about = load_model(weights_copy)
    assert model.heart_head is None and about["heart"] is None


def test_a_head_trained_for_other_weights_is_refused_in_one_line(weights_copy, untrained_weights):
    model, _ = load_model(weights_copy)
    heart_head_path(weights_copy).unlink()
    save_heart_head(model.heart_head, heart_head_path(weights_copy), {"network_sha256": sha256(untrained_weights)})
    with pytest.raises(WeightsError, match=r"trained for other weights") as raised:
        load_model(weights_copy)
    assert "\n" not in str(raised.value)


def test_a_damaged_head_is_refused_by_its_checksum(weights_copy):
    path = heart_head_path(weights_copy)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match=r"corrupt"):
        load_model(weights_copy)


def test_train_heart_refuses_an_existing_file_before_any_work(weights_copy, capsys):
    head = heart_head_path(weights_copy)
    before = head.read_bytes()
    assert main(["train-heart", "--weights", str(weights_copy), "--data", "/nonexistent"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists" in err and head.name in err
    assert head.read_bytes() == before


def test_register_records_whether_the_field_was_blurred_away_from_the_heart(tmp_path):
    sample = sample_pair()
    for flag, used in (("--heart", True), ("--no-heart", False)):
        out = tmp_path / flag
        assert main(["register", str(sample["fixed"]), str(sample["moving"]), "--out-dir", str(out),
                     "--refine", "3", flag]) == 0
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["refine"]["heart"] is used
    fields = [sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / f / "displacement.nii.gz")))
              for f in ("--heart", "--no-heart")]
    assert not np.allclose(fields[0], fields[1])
