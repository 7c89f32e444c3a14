"""``fsdiffreg segment`` on files: the image read and checked, segmented (FSDiffRegLib.pipeline.segment), the labels
written whole or not at all."""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

import SimpleITK as sitk

from ..device import pick_device
from ..events import Report, ignore, stage
from ..imaging.imageio import read_image, write_image
from ..outputs.folder import OutputError, WriteError
from ..pipeline.segment import check_found, check_stack, load_segmenter, segment_image, volumes_ml


def checked_output(image: Path, out: Path, overwrite: bool) -> None:
    """OutputError unless ``out`` may be written: a NIfTI name, in a folder that exists, not the image itself,
    and no file already there unless ``overwrite``."""
    if not out.name.endswith((".nii", ".nii.gz")):
        raise OutputError(f"the labels file {out} must be NIfTI: name it .nii.gz or .nii")
    if not out.parent.is_dir():
        raise OutputError(f"the folder of the labels file {out} does not exist")
    if out.is_dir():
        raise OutputError(f"the labels file {out} is a folder: name a file")
    if out.exists() and image.exists() and os.path.samefile(image, out):
        raise OutputError(f"the labels file {out} is the image itself: name another file")
    if out.exists() and not overwrite:
        raise OutputError(f"the labels file {out} exists: give --overwrite to replace it, or name a new file")


def write_labels(labels: sitk.Image, out: Path) -> None:
    """Write ``labels`` to ``out`` whole or not at all: into a hidden file beside it, read back, then renamed."""
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp{'.nii.gz' if out.name.endswith('.gz') else '.nii'}")
    try:
        write_image(labels, tmp, use_compression=True)
        os.replace(tmp, out)
    except WriteError as err:
        raise OutputError(f"cannot write the labels file {out}: {err.cause}; nothing written") from None
    except OSError as err:
        raise OutputError(f"cannot write the labels file {out}: {(err.strerror or str(err)).lower()}; nothing "
                          "written") from None
    finally:
        tmp.unlink(missing_ok=True)


def segment_file(image: str | Path, out: str | Path, weights: str | Path | None = None, device: str = "auto",
                 overwrite: bool = False, log: Report = ignore) -> dict:
    """The ``fsdiffreg segment`` command: check the device, the output name and the image, segment, write the
    labels whole; returns {labels, seconds, device, weights, weights_sha256, volumes_ml}."""
    torch_device = pick_device(device)
    image, out = Path(image), Path(out)
    checked_output(image, out, overwrite)
    log(stage("reading", "reading image"))
    frame = read_image(image, "image")
    check_stack(frame)
    log(stage("loading", f"loading segmentation weights on {torch_device}"))
    model, about = load_segmenter(weights, torch_device)
    start = time.time()
    labels = segment_image(frame, model, torch_device, log)
    check_found(labels)
    write_labels(labels, out)
    return {"labels": str(out.resolve()), "seconds": round(time.time() - start, 3), "device": str(torch_device),
            "weights": about["name"], "weights_sha256": about["sha256"], "volumes_ml": volumes_ml(labels)}
