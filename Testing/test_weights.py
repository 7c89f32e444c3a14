"""Weights: checksum, safe loading, clear errors."""

from __future__ import annotations

import pickle

import pytest
import torch

from FSDiffRegLib.config import Config
from FSDiffRegLib.network import FSDiffRegNet
from FSDiffRegLib.weights import WeightsError, load_model, save_weights, sha256


def test_round_trip_keeps_every_tensor(tmp_path):
    torch.manual_seed(1)
    net = FSDiffRegNet(Config(base_width=4, norm_groups=2))
    digest = save_weights(net, tmp_path / "w.pt", {"epoch": 3})
    model, about = load_model(tmp_path / "w.pt")
    assert about == {"name": "w.pt", "sha256": digest, "info": {"epoch": 3}}
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
