"""Weights: checksum, safe loading, clear errors."""

from __future__ import annotations

import json
import pickle

import pytest
import torch

from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.network import FSDiffRegNet, native_bf16
from FSDiffRegLib.model.weights import WeightsError, load_model, save_weights, sha256


def test_round_trip_keeps_every_tensor(tmp_path):
    torch.manual_seed(1)
    net = FSDiffRegNet(Config(base_width=4, norm_groups=2))
    digest = save_weights(net, tmp_path / "w.pt", {"epoch": 3})
    model, about = load_model(tmp_path / "w.pt")
    assert about == {"name": "w.pt", "sha256": digest, "info": {"epoch": 3}, "heart": None,
                     "precision": "bfloat16" if native_bf16() else "float32"}
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), model.state_dict().values()))


def test_checksum_mismatch_is_reported(tmp_path):
    path = tmp_path / "w.pt"
    save_weights(FSDiffRegNet(Config(base_width=4, norm_groups=2)), path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(WeightsError, match="corrupt"):
        load_model(path)


class Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_code_in_a_weights_file_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"config": {}, "state_dict": Payload()}, handle)
    with pytest.raises(WeightsError, match="cannot load"):
        load_model(path)
    assert "must never run" not in capsys.readouterr().out


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model(tmp_path / "nope.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(WeightsError, match="cannot load"):
        load_model(tmp_path / "junk.pt")
    assert len(sha256(tmp_path / "junk.pt")) == 64


def one_line_refusal(path, match: str) -> str:
    with pytest.raises(WeightsError, match=match) as caught:
        load_model(path)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "w.pt"
    save_weights(FSDiffRegNet(Config(base_width=4, norm_groups=2)), path)
    return path


@pytest.mark.parametrize("content", [b"", b"\xff\xfe\x00 not text", b"hello  w.pt\n"])
def test_a_checksum_file_that_holds_no_checksum_is_named(saved, content):
    saved.with_name("w.pt.sha256").write_bytes(content)
    one_line_refusal(saved, "w.pt.sha256 holds no SHA256 checksum")


def test_an_upper_case_checksum_is_accepted(saved):
    checksum = saved.with_name("w.pt.sha256")
    checksum.write_text(checksum.read_text().upper())
    load_model(saved)


def test_code_is_refused_plainly_without_advice_to_lower_the_guard(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"config": {}, "state_dict": Payload()}, path)  # torch's own (zip) format
    message = one_line_refusal(path, "contains code or Python objects that are not plain weights, refused for safety")
    assert "weights_only" not in message and "Re-running" not in message
    assert "must never run" not in capsys.readouterr().out


def test_a_state_dict_of_another_network_names_the_keys(tmp_path):
    net = FSDiffRegNet(Config(base_width=4, norm_groups=2))
    state = dict(list(net.state_dict().items())[5:])
    state["extra.weight"] = torch.zeros(1)
    first = next(iter(net.state_dict()))
    state[list(state)[0]] = torch.zeros(2)
    torch.save({"config": json.loads(net.cfg.to_json()), "state_dict": state}, tmp_path / "other.pt")
    message = one_line_refusal(tmp_path / "other.pt", "do not fit the network: 5 missing")
    assert first in message and "1 unexpected (extra.weight)" in message and "1 of another shape" in message


@pytest.mark.parametrize("change, match", [
    ({"grid_spacing": [0, 1.5, 3.15]}, "grid_spacing"),
    ({"grid_spacing": [-1.5, 1.5, 3.15]}, "grid_spacing"),
    ({"grid_spacing": [float("nan"), 1.5, 3.15]}, "grid_spacing"),
    ({"grid_size": [100000, 100000, 32]}, "grid_size"),
    ({"grid_size": [130, 128, 32]}, "grid_size"),
    ({"grid_size": "abc"}, "grid_size"),
])
def test_a_configuration_outside_sane_bounds_is_refused(tmp_path, change, match):
    net = FSDiffRegNet(Config(base_width=4, norm_groups=2))
    config = {**json.loads(net.cfg.to_json()), **change}
    torch.save({"config": config, "state_dict": net.state_dict()}, tmp_path / "odd.pt")
    one_line_refusal(tmp_path / "odd.pt", f"invalid configuration: {match}")
    with pytest.raises(ValueError, match=match):
        Config.from_dict(config)


def test_files_that_are_not_fsdiffreg_weights(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    one_line_refusal(tmp_path / "empty.pt", "empty")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    one_line_refusal(tmp_path / "junk.pt", "not a PyTorch weights file")
    torch.save([1, 2], tmp_path / "list.pt")
    one_line_refusal(tmp_path / "list.pt", "not FSDiffReg weights")


def test_bundled_weights_by_name(tmp_path, monkeypatch):
    """``weaksup`` is the default and ``paper`` the paper's unsupervised model; a file of that name wins."""
    from FSDiffRegLib.resources import NAMED_WEIGHTS

    if not all(path.is_file() for path in NAMED_WEIGHTS.values()):
        pytest.skip("bundled weights missing")
    assert load_model(None)[1]["name"] == "fsdiffreg_acdc_weaksup_v2.pt"
    assert load_model("paper")[1]["name"] == "fsdiffreg_acdc_cpu.pt"
    assert load_model("weaksup")[1]["sha256"] == load_model(None)[1]["sha256"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").write_bytes(b"not weights")
    with pytest.raises(WeightsError, match="paper"):
        load_model("paper")


@pytest.mark.parametrize(("name", "module"), [("FDG-off", "fdg"), ("SDG-off", "sdg")])
def test_bundled_ablations_are_the_paper_recipe_with_one_module_off(name, module):
    """Table 2's rows: the ``paper`` model's configuration, recipe and budget, one module off."""
    from dataclasses import asdict

    from FSDiffRegLib.evaluation.benchmark import ABLATIONS
    from FSDiffRegLib.resources import NAMED_WEIGHTS

    if not ABLATIONS[name].is_file():
        pytest.skip(f"{name} weights not bundled yet: {ABLATIONS[name].name}")
    ablation, paper = load_model(ABLATIONS[name])[0].cfg, load_model(NAMED_WEIGHTS["paper"])[0].cfg
    assert not getattr(ablation, module) and getattr(paper, module)
    assert {**asdict(ablation), module: True} == asdict(paper)
