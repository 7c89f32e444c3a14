"""A cine read straight from DICOM: written here (SimpleITK) from a Sunnybrook cine, one series for the whole cine
or one series per slice (UK Biobank), and refused in one line when a phase is missing or times disagree."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from FSDiffRegLib.errors import InputError
from FSDiffRegLib.imaging.cine import read_cine

CINE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "sunnybrook-cine" / "SCD0000101" \
    / "SCD0000101_4d.nii.gz"
INTERVAL_MS = 45.0
UID = "1.2.826.0.1.3680043.2.1125.1"


@pytest.fixture(scope="module")
def cine() -> sitk.Image:
    if not CINE.is_file():
        pytest.skip(f"Sunnybrook cine not found at {CINE}")
    return sitk.ReadImage(str(CINE))


def frame(cine: sitk.Image, t: int) -> sitk.Image:
    size = cine.GetSize()
    return sitk.Extract(cine, size[:3] + (0,), (0, 0, 0, t), sitk.ExtractImageFilter.DIRECTIONCOLLAPSETOSUBMATRIX)


def write_dicom(cine: sitk.Image, folder: Path, per_slice_series: bool, jitter_ms: float = 0.0) -> None:
    """Every slice of every phase as one DICOM file, placed by its position, orientation and trigger time; the
    files in one folder (a series per slice: each in a subfolder of its own)."""
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    phases, slices = cine.GetSize()[3], cine.GetSize()[2]
    for t in range(phases):
        volume = frame(cine, t)
        direction = np.array(volume.GetDirection()).reshape(3, 3)
        for z in range(slices):
            image = volume[:, :, z:z + 1]
            position = volume.TransformIndexToPhysicalPoint((0, 0, z))
            series = f"{UID}.2.{z + 1}" if per_slice_series else f"{UID}.2"
            tags = {"0008|0060": "MR", "0020|000d": f"{UID}.1", "0020|000e": series, "0008|0018": f"{UID}.3.{t}.{z}",
                    "0020|0013": str(t * slices + z + 1), "0020|0032": "\\".join(f"{v:.6f}" for v in position),
                    "0020|0037": "\\".join(f"{v:.8f}" for v in (*direction[:, 0], *direction[:, 1])),
                    "0018|1060": f"{t * INTERVAL_MS + (jitter_ms if z == 1 else 0.0):.1f}",
                    "0018|0050": f"{volume.GetSpacing()[2]:.4f}", "0028|0030": "\\".join(
                        f"{v:.6f}" for v in volume.GetSpacing()[1::-1])}
            for key, value in tags.items():
                image.SetMetaData(key, value)
            target = folder / f"slice{z:02d}" if per_slice_series else folder
            target.mkdir(parents=True, exist_ok=True)
            writer.SetFileName(str(target / f"IM_{t:02d}_{z:02d}.dcm"))
            writer.Execute(image)


@pytest.mark.parametrize("per_slice_series", [False, True], ids=["one series", "a series per slice"])
def test_a_dicom_cine_reads_as_its_nifti(cine: sitk.Image, tmp_path: Path, per_slice_series: bool) -> None:
    write_dicom(cine, tmp_path / "dicom", per_slice_series)
    read = read_cine(tmp_path / "dicom")
    assert len(read.frames) == cine.GetSize()[3]
    assert read.times_ms == [t * INTERVAL_MS for t in range(cine.GetSize()[3])]
    for t in (0, 7, 19):
        expected = frame(cine, t)
        got = read.frames[t]
        assert np.array_equal(sitk.GetArrayFromImage(got), sitk.GetArrayFromImage(expected))
        assert np.allclose(got.GetOrigin(), expected.GetOrigin(), atol=1e-3)
        assert np.allclose(got.GetSpacing(), expected.GetSpacing(), atol=1e-3)
        assert np.allclose(got.GetDirection(), expected.GetDirection(), atol=1e-4)


def test_a_missing_phase_is_refused_in_one_line(cine: sitk.Image, tmp_path: Path) -> None:
    write_dicom(cine, tmp_path / "dicom", per_slice_series=True)
    (tmp_path / "dicom" / "slice03" / "IM_05_03.dcm").unlink()
    with pytest.raises(InputError, match=r"cine DICOM folder .*dicom: the slice at -?\d+\.\d mm has 19 phases, "
                                         r"another 20: a phase is missing or a series mixed in$"):
        read_cine(tmp_path / "dicom")
    shutil.rmtree(tmp_path / "dicom" / "slice05")
    with pytest.raises(InputError, match="the slice at .* has 19 phases"):
        read_cine(tmp_path / "dicom")


def test_a_missing_slice_and_disagreeing_trigger_times_are_refused(cine: sitk.Image, tmp_path: Path) -> None:
    write_dicom(cine, tmp_path / "gap", per_slice_series=True)
    shutil.rmtree(tmp_path / "gap" / "slice05")
    with pytest.raises(InputError, match="slices are not evenly spaced .*: a slice is missing"):
        read_cine(tmp_path / "gap")
    write_dicom(cine, tmp_path / "late", per_slice_series=False, jitter_ms=30.0)
    with pytest.raises(InputError, match=r"one phase's trigger times differ by 30 ms across slices, more than half "
                                         r"the frame interval \(45 ms\)"):
        read_cine(tmp_path / "late")
