"""Baseline registrations for the benchmark: identity, elastix B-spline, ANTs SyN.

Each baseline takes the fixed and moving images as they are and returns an ITK
displacement field in the convention of ``field.py``: on the fixed image's grid, LPS
millimetres, fixed point -> moving point. elastix and ANTs are optional extras
(``pip install .[bench]``), imported only when their baseline runs.
"""

from __future__ import annotations

import importlib.metadata
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

Baseline = Callable[[sitk.Image, sitk.Image], sitk.Image]
REQUIRES = {"identity": None, "elastix": "itk-elastix", "ants": "antspyx"}
BASELINE_NAMES = {"identity": "Identity", "elastix": "elastix B-spline (default)", "ants": "ANTs SyN (SyNOnly)"}


def missing(name: str) -> str | None:
    """Why the baseline ``name`` cannot run here, or None when it can."""
    package = REQUIRES[name]
    if package is None:
        return None
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return f"{package} is not installed (pip install .[bench])"
    return None


def runnable(chosen: list[str]) -> tuple[list[str], list[str]]:
    """The baselines among ``chosen`` that can run here (in table order), and a note for each one that cannot."""
    keys = [key for key in BASELINE_NAMES if key in chosen]
    return ([key for key in keys if not missing(key)],
            [f"{BASELINE_NAMES[key]}: {missing(key)}" for key in keys if missing(key)])


def vector_field(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """LPS vectors (D, H, W, 3) in mm -> a VectorFloat64 field on ``reference``'s grid."""
    if array.shape != (*reference.GetSize()[::-1], 3):
        raise ValueError(f"field of shape {array.shape} does not fit the fixed grid {reference.GetSize()}")
    field = sitk.GetImageFromArray(array.astype(np.float64), isVector=True)
    field.CopyInformation(reference)
    return field


def identity_field(fixed: sitk.Image, moving: sitk.Image) -> sitk.Image:
    """No registration: a zero field on the fixed grid."""
    return vector_field(np.zeros((*fixed.GetSize()[::-1], 3)), fixed)


def _to_itk(image: sitk.Image):
    """A SimpleITK image as a float32 itk.Image on the same grid."""
    import itk

    out = itk.image_from_array(sitk.GetArrayFromImage(image).astype(np.float32))
    out.SetOrigin(image.GetOrigin())
    out.SetSpacing(image.GetSpacing())
    out.SetDirection(itk.matrix_from_array(np.array(image.GetDirection()).reshape(3, 3)))
    return out


def elastix_field(fixed: sitk.Image, moving: sitk.Image) -> sitk.Image:
    """elastix with its default B-spline parameter map; the field is transformix's deformation field.

    transformix also writes the field to its output directory: a temporary one here.
    """
    import itk

    parameters = itk.ParameterObject.New()
    parameters.AddParameterMap(parameters.GetDefaultParameterMap("bspline"))
    itk_moving = _to_itk(moving)
    _, transform = itk.elastix_registration_method(_to_itk(fixed), itk_moving, parameter_object=parameters)
    with tempfile.TemporaryDirectory() as tmp:
        deformation = itk.transformix_deformation_field(itk_moving, transform, output_directory=tmp)
        vectors = itk.array_from_image(deformation)
    return vector_field(vectors, fixed)


def ants_field(fixed: sitk.Image, moving: sitk.Image) -> sitk.Image:
    """ANTs SyN (antspyx ``SyNOnly`` with its defaults); the field is its forward transform.

    ANTs writes the forward transform as one ITK composite transform (an identity
    initial transform and the SyN warp), sampled here on the fixed grid.
    """
    import ants

    with tempfile.TemporaryDirectory() as tmp:
        result = ants.registration(ants.from_sitk(sitk.Cast(fixed, sitk.sitkFloat32)),
                                   ants.from_sitk(sitk.Cast(moving, sitk.sitkFloat32)),
                                   type_of_transform="SyNOnly", outprefix=str(Path(tmp) / "syn_"),
                                   write_composite_transform=True)
        transform = sitk.ReadTransform(result["fwdtransforms"])
    field = sitk.TransformToDisplacementField(transform, sitk.sitkVectorFloat64, fixed.GetSize(), fixed.GetOrigin(),
                                              fixed.GetSpacing(), fixed.GetDirection())
    return vector_field(sitk.GetArrayFromImage(field), fixed)


BASELINES: dict[str, Baseline] = {"identity": identity_field, "elastix": elastix_field, "ants": ants_field}
