"""Automatic RV, myocardium and LV labels of a short-axis frame (ACDC's values 1, 2, 3): a 2D U-Net
(MONAI's UNet, rebuilt in plain torch in ``segment_net``) applied slice by slice on a fixed in-plane
spacing, the class probabilities resampled back onto the image's own grid, each structure kept to its
largest connected component.

The slices are the image's third index axis (as ACDC, Sunnybrook and DICOM series store a stack).
Each volume is normalised by its intensity percentiles. Weights: ``resources.SEGMENTATION_WEIGHTS``
(docs/segmentation-model-card.md); ``training.segment_train`` trains them, ``commands.segment_file`` writes
a frame's labels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from ..device import pick_device
from ..errors import InputError, WeightsError
from ..events import Report, ignore, prefixed, progress, stage
from ..labels import VALUES
from ..model.segment_net import UNet
from ..model.weights import checked_payload, load_safely, load_state
from ..resources import segmentation_weights_path

SPACING_MM = 1.5  # in-plane spacing the network sees (ACDC's median in-plane spacing is about 1.5 mm)
MULTIPLE = 16  # the U-Net halves the grid four times
PERCENTILES = (0.5, 99.5)  # intensity window mapped to [0, 1] per volume
NETWORK = {"channels": [32, 64, 128, 256, 512], "strides": [2, 2, 2, 2], "num_res_units": 1, "norm": "batch"}
CLASSES = 4  # background, RV, Myo, LV (ACDC's values)
ROTATIONS = 4  # test-time quarter turns averaged: validation mean Dice 0.8841 -> 0.8894 (v1 weights)
MIN_SLICES = 5  # a short-axis stack of the whole heart (ACDC: 6 to 18 slices)
MIN_FIELD_MM = 80.0  # in-plane field of view of a short-axis frame that shows the whole heart
AUTO = "auto"  # track --labels auto
AUTO_LABELS = "reference_labels_auto.nii.gz"  # the labels track --labels auto writes beside its outputs

def build_network(network: dict | None = None) -> torch.nn.Module:
    """The 2D U-Net (``segment_net``, MONAI's UNet in plain torch): one input channel (the normalised slice),
    CLASSES output logits; ``network`` holds its channels, strides, residual units and norm."""
    return UNet(in_channels=1, out_channels=CLASSES, **(network or NETWORK))


def normalise(voxels: np.ndarray) -> np.ndarray:
    """Map the volume's PERCENTILES window onto [0, 1] (clipped), as float32."""
    low, high = np.percentile(voxels, PERCENTILES)
    scaled = (voxels.astype(np.float32) - low) / max(float(high - low), 1e-6)
    return np.clip(scaled, 0.0, 1.0).astype(np.float32)


def model_grid(image: sitk.Image) -> sitk.Image:
    """An empty grid with the image's direction, slices and centre, SPACING_MM in plane, each in-plane size
    a multiple of MULTIPLE covering the image's whole field of view."""
    size = list(image.GetSize())
    spacing = list(image.GetSpacing())
    new_size = [int(np.ceil(size[i] * spacing[i] / SPACING_MM / MULTIPLE)) * MULTIPLE for i in (0, 1)] + [size[2]]
    new_spacing = [SPACING_MM, SPACING_MM, spacing[2]]
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in size])
    direction = np.array(image.GetDirection()).reshape(3, 3)
    offset = direction @ (np.array(new_spacing) * (np.array(new_size) - 1) / 2)
    grid = sitk.Image(new_size, sitk.sitkFloat32)
    grid.SetSpacing(new_spacing)
    grid.SetDirection(image.GetDirection())
    grid.SetOrigin(tuple(np.array(centre) - offset))
    return grid


def to_model_grid(image: sitk.Image, interpolator: int = sitk.sitkLinear) -> sitk.Image:
    """The image resampled onto ``model_grid`` (outside: 0)."""
    return sitk.Resample(image, model_grid(image), sitk.Transform(), interpolator, 0.0, image.GetPixelID())


def prepare(image: sitk.Image) -> np.ndarray:
    """The network's input: the image on the model grid, normalised, as (slices, rows, columns) float32."""
    resampled = to_model_grid(sitk.Cast(image, sitk.sitkFloat32))
    return normalise(sitk.GetArrayFromImage(resampled))


def rotated_softmax(model: torch.nn.Module, batch: torch.Tensor, turns: int) -> torch.Tensor:
    """The class probabilities of ``batch`` turned by ``turns`` quarter turns in plane, turned back."""
    logits = model(torch.rot90(batch, turns, (2, 3))).float()
    return torch.rot90(torch.softmax(logits, dim=1), -turns, (2, 3))


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, slices: np.ndarray, device: torch.device,
                          log: Report = ignore) -> np.ndarray:
    """Softmax probabilities (slices, CLASSES, rows, columns) of the prepared slices, one slice at a time, each the
    mean over the slice turned by 0, 90, 180 and 270 degrees (the training saw every angle; no mirror images)."""
    out = np.empty((slices.shape[0], CLASSES) + slices.shape[1:], np.float32)
    for k in range(slices.shape[0]):
        batch = torch.from_numpy(slices[k][None, None]).to(device)
        turned = torch.stack([rotated_softmax(model, batch, turns) for turns in range(ROTATIONS)])
        out[k] = turned.mean(dim=0)[0].cpu().numpy()
        log(progress("segmenting", k + 1, slices.shape[0], f"segmenting: {k + 1} of {slices.shape[0]} slices done"))
    return out


def probabilities_to_labels(probabilities: np.ndarray, grid: sitk.Image, image: sitk.Image) -> sitk.Image:
    """Resample the probabilities from the model grid onto the image's grid (linear) and take the likeliest class
    per voxel, as a UInt8 label image on the image's grid."""
    vector = sitk.GetImageFromArray(np.moveaxis(probabilities, 1, -1), isVector=True)
    vector.CopyInformation(grid)
    back = sitk.Resample(vector, image, sitk.Transform(), sitk.sitkLinear, 0.0)
    labels = np.argmax(sitk.GetArrayFromImage(back), axis=-1).astype(np.uint8)
    out = sitk.GetImageFromArray(labels)
    out.CopyInformation(image)
    return out


def keep_largest(labels: sitk.Image) -> sitk.Image:
    """Each structure reduced to its largest 3D connected component (face-connected); the rest background."""
    array = sitk.GetArrayFromImage(labels)
    out = np.zeros_like(array)
    for value in VALUES.values():
        components = sitk.RelabelComponent(sitk.ConnectedComponent(labels == value), sortByObjectSize=True)
        out[sitk.GetArrayViewFromImage(components) == 1] = value
    image = sitk.GetImageFromArray(out)
    image.CopyInformation(labels)
    return image


def segment_image(image: sitk.Image, model: torch.nn.Module, device: torch.device | str = "cpu",
                  log: Report = ignore) -> sitk.Image:
    """RV (1), Myo (2) and LV (3) labels (UInt8) of one 3D short-axis frame, on the frame's own grid, each
    structure its largest connected component. A progress event after each slice."""
    slices = prepare(image)
    probabilities = predict_probabilities(model, slices, torch.device(device), log)
    return keep_largest(probabilities_to_labels(probabilities, model_grid(image), image))


def load_segmenter(weights: str | Path | None = None,
                   device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """The segmentation network (default: the bundled weights), float32 in eval mode on ``device``, and its
    description {name, sha256}; the ``.sha256`` beside the file is checked, and the file loaded with
    ``weights_only=True``."""
    path = segmentation_weights_path(weights)
    if weights is None and not path.is_file():
        raise WeightsError("no segmentation model is bundled with this version yet (its training is under way: "
                           "docs/segmentation-model-card.md); give segmentation weights with --weights")
    payload, digest = checked_payload(path, lambda p: load_safely(p, "segmentation weights"))
    if not (isinstance(payload, dict) and {"network", "state_dict"} <= payload.keys()):
        raise WeightsError(f"cannot load segmentation weights {path}: not a segmentation model (a dict with "
                           "'network' and 'state_dict')")
    try:
        model = build_network(payload["network"])
    except (TypeError, ValueError, RuntimeError) as err:
        raise WeightsError(f"cannot load segmentation weights {path}: invalid network: {err}") from None
    state = payload["state_dict"]
    load_state(model, {k: v.float() for k, v in state.items()} if isinstance(state, dict) else state,
               f"segmentation weights {path}")
    return model.to(pick_device(str(device)) if isinstance(device, str) else device).eval(), \
        {"name": path.name, "sha256": digest}


def check_stack(image: sitk.Image, role: str = "image") -> None:
    """InputError unless ``image`` (checked by ``imageio``) looks like a short-axis stack: MIN_SLICES slices or
    more along its third axis, slices no thinner than its pixels, MIN_FIELD_MM of view in plane."""
    size, spacing = image.GetSize(), image.GetSpacing()
    if size[2] < MIN_SLICES:
        raise InputError(f"{role} image has {size[2]} slices along its third axis: a short-axis stack of the heart "
                         f"has at least {MIN_SLICES}")
    if spacing[2] < 0.99 * min(spacing[:2]):
        raise InputError(f"{role} image's slices ({spacing[2]:.3g} mm apart) are thinner than its pixels "
                         f"({spacing[0]:.3g} x {spacing[1]:.3g} mm): is it a short-axis stack, slices along its "
                         "third axis?")
    field = [n * mm for n, mm in zip(size[:2], spacing[:2])]
    if min(field) < MIN_FIELD_MM:
        raise InputError(f"{role} image shows {field[0]:.0f} x {field[1]:.0f} mm in plane: a short-axis frame of "
                         f"the whole heart shows at least {MIN_FIELD_MM:.0f} mm")


def check_found(labels: sitk.Image, role: str = "image") -> None:
    """InputError naming the structures the model did not find (the image is likely no short-axis heart)."""
    present = set(np.unique(sitk.GetArrayViewFromImage(labels)).tolist())
    missing = [name for name, value in VALUES.items() if value not in present]
    if missing:
        raise InputError(f"the segmentation found no {', '.join(missing)} in the {role}: is it a short-axis cine "
                         "MRI frame of the whole heart?")


def is_auto(labels: str | Path | None) -> bool:
    """Whether a labels argument asks for automatic labels (``auto``; a file of that name is ``./auto``)."""
    return isinstance(labels, str) and labels == AUTO


def auto_labels(frame: sitk.Image, device: torch.device, log: Report = ignore,
                weights: str | Path | None = None) -> tuple[sitk.Image, dict]:
    """The reference frame's labels by the segmentation model, and what metrics.json records of them."""
    check_stack(frame, "reference frame")
    log(stage("loading", f"loading segmentation weights on {device}"))
    model, about = load_segmenter(weights, device)
    labels = segment_image(frame, model, device, prefixed(log, "reference frame"))
    check_found(labels, "reference frame")
    return labels, {"source": AUTO, "file": AUTO_LABELS, "weights": about["name"], "weights_sha256": about["sha256"]}


def volumes_ml(labels: sitk.Image) -> dict[str, float]:
    """Each structure's volume in millilitres."""
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    array = sitk.GetArrayViewFromImage(labels)
    return {name: round(float(np.count_nonzero(array == value)) * voxel_ml, 2) for name, value in VALUES.items()}
