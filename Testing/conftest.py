"""Shared fixtures: real ACDC data (skipped where absent), sample pair, throwaway weights."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from FSDiffRegLib.imaging import acdc
from FSDiffRegLib.model.config import Config
from FSDiffRegLib.model.network import FSDiffRegNet
from FSDiffRegLib.model.weights import save_weights
from FSDiffRegLib.resources import BUNDLED_WEIGHTS
from FSDiffRegLib.resources import SAMPLE as SAMPLE_DIR

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "ACDC"
SAMPLE = SAMPLE_DIR


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA / "training").is_dir():
        pytest.skip(f"ACDC data not found at {DATA}: these tests need ../shared/data/ACDC")
    return DATA


@pytest.fixture(scope="session")
def validation_pair(data_dir: Path) -> acdc.AcdcPair:
    return acdc.split(data_dir, "validation")[1]


@pytest.fixture(scope="session")
def bundled_weights() -> Path:
    if not BUNDLED_WEIGHTS.is_file():
        pytest.skip(f"bundled weights missing: {BUNDLED_WEIGHTS}")
    return BUNDLED_WEIGHTS


@pytest.fixture(scope="session")
def untrained_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "untrained.pt"
    save_weights(FSDiffRegNet(Config.load("cpu")), path)
    return path


@pytest.fixture
def worker():
    """The real worker process (``python -m FSDiffRegLib.commands.worker``), its output merged, killed at the end."""
    process = subprocess.Popen([sys.executable, "-m", "FSDiffRegLib.commands.worker"], cwd=ROOT, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    yield process
    process.kill()
    process.wait()


