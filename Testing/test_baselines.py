"""Baselines (identity, elastix, ANTs) recover a known displacement; the benchmark table on real data."""

from __future__ import annotations

import argparse
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from FSDiffRegLib.commands.cli import METHODS, ablation_item, add_benchmark_arguments, benchmark_request, methods_from
from FSDiffRegLib.evaluation import benchmark
from FSDiffRegLib.evaluation.baselines import BASELINES, identity_field, missing
from FSDiffRegLib.imaging.field import apply_field

pytestmark = pytest.mark.filterwarnings("ignore:builtin type:DeprecationWarning")  # SWIG wrappers of itk

SIZE = (40, 40, 16)
SPACING = np.array([2.0, 2.0, 4.0])
ORIGIN = np.array([10.0, -20.0, 30.0])
ANGLE = np.deg2rad(30)
DIRECTION = np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0], [0, 0, -1], [np.sin(ANGLE), np.cos(ANGLE), 0]])
SHIFT = np.array([4.0, -3.0, 2.0])  # LPS mm: what lies at x in the fixed image lies at x + SHIFT in the moving one
RNG = np.random.default_rng(0)
BLOBS = RNG.uniform(-40, 40, (60, 3)) * [1, 1, 0.8]
AMPLITUDES = RNG.uniform(20, 100, 60)
CENTRAL = (slice(4, -4), slice(8, -8), slice(8, -8))  # array (D, H, W) away from the borders


def textured(shift: np.ndarray) -> sitk.Image:
    """Smooth blobs on an oblique grid, translated by ``shift`` mm in physical space."""
    k, j, i = np.indices(SIZE[::-1])
    points = ORIGIN + (np.stack([i, j, k], -1) * SPACING) @ DIRECTION.T - shift
    centre = ORIGIN + DIRECTION @ (SPACING * (np.array(SIZE) - 1) / 2)
    values = sum(a * np.exp(-((points - centre - c) ** 2).sum(-1) / (2 * 6.0**2)) for c, a in zip(BLOBS, AMPLITUDES))
    image = sitk.GetImageFromArray(values.astype(np.float32))
    image.SetSpacing(SPACING.tolist())
    image.SetOrigin(ORIGIN.tolist())
    image.SetDirection(DIRECTION.ravel().tolist())
    return image


def test_identity_field_is_zero_on_the_fixed_grid():
    fixed, moving = textured(np.zeros(3)), textured(SHIFT)
    field = identity_field(fixed, moving)
    assert field.GetPixelID() == sitk.sitkVectorFloat64 and field.GetSize() == fixed.GetSize()
    assert np.allclose(field.GetDirection(), fixed.GetDirection()) and np.allclose(field.GetOrigin(), fixed.GetOrigin())
    assert not np.any(sitk.GetArrayFromImage(field))


@pytest.mark.parametrize("name", ["elastix", "ants"])
def test_baseline_recovers_a_known_translation(name, tmp_path, monkeypatch):
    if missing(name):
        pytest.skip(missing(name))
    fixed, moving = textured(np.zeros(3)), textured(SHIFT)
    monkeypatch.chdir(tmp_path)
    field = BASELINES[name](fixed, moving)
    assert not any(tmp_path.iterdir())  # no files left behind
    assert field.GetPixelID() == sitk.sitkVectorFloat64 and field.GetSize() == fixed.GetSize()
    assert np.allclose(field.GetDirection(), fixed.GetDirection()) and np.allclose(field.GetSpacing(), SPACING)
    vectors = sitk.GetArrayFromImage(field)[CENTRAL].reshape(-1, 3)
    assert np.allclose(np.median(vectors, axis=0), SHIFT, atol=0.75)  # LPS mm, fixed -> moving
    def error(image: sitk.Image) -> float:
        return np.mean((sitk.GetArrayFromImage(image) - sitk.GetArrayFromImage(fixed))[CENTRAL] ** 2)

    assert error(apply_field(moving, field)) < error(moving) / 5


def test_register_and_benchmark_do_not_import_the_baselines():
    code = ("import sys, FSDiffRegLib.pipeline.register, FSDiffRegLib.commands.cli, FSDiffRegLib.evaluation.benchmark; "
            "print(sorted({'itk', 'ants'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_methods_are_checked():
    method_list = methods_from(METHODS)
    assert method_list("identity, network") == ["identity", "network"]
    with pytest.raises(argparse.ArgumentTypeError):
        method_list("identity,voxelmorph")
    assert ablation_item("FDG-off=a/b.pt")[0] == "FDG-off"
    with pytest.raises(argparse.ArgumentTypeError):
        ablation_item("a/b.pt")


def test_ablations_without_weights_are_skipped(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "ABLATIONS", {"FDG-off": tmp_path / "absent.pt"})
    parser = argparse.ArgumentParser()
    add_benchmark_arguments(parser)
    methods, skipped = benchmark.build_methods(
        benchmark_request(parser.parse_args(["--data", ".", "--methods", "ablations"])), "cpu")
    assert methods == [] and len(skipped) == 1 and skipped[0].startswith("FSDiffReg FDG-off: no weights at ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is read from /proc (Linux)")
def test_peak_memory_sees_an_allocation():
    with benchmark.PeakMemory() as peak:
        block = np.ones(50_000_000)  # 400 MB, touched
        del block
    assert 350 < peak.mb < 1000


def table_rows(text: str) -> dict[str, list[str]]:
    """The rows of the report's first table (the methods), by their first cell."""
    first = text[text.index("\n| "):].split("\n\n")[0]
    lines = [line for line in first.splitlines() if line.startswith("| ")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


def test_benchmark_on_one_validation_pair(data_dir, bundled_weights, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_benchmark_arguments(parser)
    out = tmp_path / "results.md"
    args = parser.parse_args(["--data", str(data_dir), "--limit", "1", "--methods", "identity,network",
                              "--device", "cpu", "--out", str(out)])
    benchmark.main_benchmark(benchmark_request(args))
    text = out.read_text()
    assert text == capsys.readouterr().out
    assert "fsdiffreg benchmark --data" in text and "--methods identity,network" in text and "Pairs: 1 " in text
    rows = table_rows(text)
    assert list(rows) == ["method", "Identity", "FSDiffReg (network)"]
    assert rows["method"][-3:] == ["s/pair median", "s/pair mean", "peak MB"]
    identity, network = rows["Identity"], rows["FSDiffReg (network)"]
    def dice(row: list[str]) -> list[float]:
        return [float(cell.split()[0]) for cell in row[:5]]

    assert all(0.2 < d < 1 for d in dice(identity) + dice(network))
    assert identity[5:7] == ["0.0000", "0.000"]  # no folding, |J| = 1 everywhere
    assert dice(network)[3] > dice(identity)[3]  # the mean Dice improves
    assert 0 <= float(network[5]) < 5 and 0 < float(network[6]) < 1
    assert float(network[7]) > 0 and float(network[9]) > 0


def test_benchmark_on_a_training_pair(data_dir, tmp_path):
    """``--split train``: the first training patient, named as such in the report."""
    parser = argparse.ArgumentParser()
    add_benchmark_arguments(parser)
    out = tmp_path / "results.md"
    benchmark.main_benchmark(benchmark_request(parser.parse_args(["--data", str(data_dir), "--split", "train",
                                                                  "--limit", "1", "--methods", "identity",
                                                                  "--out", str(out)])))
    text = out.read_text()
    assert text.startswith("# FSDiffReg benchmark on the ACDC train split")
    assert "Pairs: 1 (patient001 to patient001;" in text and "--split train" in text
