"""Automatic RV, myocardium and LV labels of a short-axis frame (ACDC's values 1, 2, 3): a 2D U-Net
(MONAI's UNet) applied slice by slice on a fixed in-plane spacing, the class probabilities
resampled back onto the image's own grid.

The slices are the image's third index axis (as ACDC, Sunnybrook and DICOM series store a stack).
Each volume is normalised by its intensity percentiles. Weights: ``resources.SEGMENTATION_WEIGHTS``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

SPACING_MM = 1.5  # in-plane spacing the network sees (ACDC's median in-plane spacing is about 1.5 mm)
MULTIPLE = 16  # the U-Net halves the grid four times
PERCENTILES = (0.5, 99.5)  # intensity window mapped to [0, 1] per volume
NETWORK = {"channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2], "num_res_units": 1, "norm": "batch"}
CLASSES = 4  # background, RV, Myo, LV (ACDC's values)

Progress = Callable[[int, int], None]  # (slices done, slices in all)


def build_network(network: dict | None = None) -> torch.nn.Module:
    """The 2D U-Net (MONAI's UNet, strided convolutions, residual units): one input channel (the normalised
    slice), CLASSES output logits; ``network`` holds its channels, strides, residual units and norm."""
    from monai.networks.nets import UNet

    return UNet(spatial_dims=2, in_channels=1, out_channels=CLASSES, **(network or NETWORK))


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


@torch.no_grad()
def predict_probabilities(model: torch.nn.Module, slices: np.ndarray, device: torch.device,
                          progress: Progress | None = None) -> np.ndarray:
    """Softmax probabilities (slices, CLASSES, rows, columns) of the prepared slices, one slice at a time."""
    out = np.empty((slices.shape[0], CLASSES) + slices.shape[1:], np.float32)
    for k in range(slices.shape[0]):
        batch = torch.from_numpy(slices[k][None, None]).to(device)
        out[k] = torch.softmax(model(batch).float(), dim=1)[0].cpu().numpy()
        if progress is not None:
            progress(k + 1, slices.shape[0])
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


def segment_image(image: sitk.Image, model: torch.nn.Module, device: torch.device | str = "cpu",
                  progress: Progress | None = None) -> sitk.Image:
    """RV (1), Myo (2) and LV (3) labels of one 3D short-axis frame, on the frame's own grid."""
    device = torch.device(device)
    slices = prepare(image)
    probabilities = predict_probabilities(model, slices, device, progress)
    return probabilities_to_labels(probabilities, model_grid(image), image)


def load_network(path: Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A segmentation network from a checkpoint ``{"network", "state_dict", ...}`` (fp16 or fp32), in eval mode
    and float32 on ``device``."""
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = build_network(payload["network"])
    model.load_state_dict({k: v.float() for k, v in payload["state_dict"].items()})
    return model.to(torch.device(device)).eval()
