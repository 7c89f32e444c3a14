"""Where the bundled files are: weights, configurations and the sample pair (package data).

The one place that names these paths; the command line, the Slicer module and the tests
all ask here. Imports nothing heavy, so the Slicer GUI may use it.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ASSETS = PACKAGE / "assets"
CONFIGS = PACKAGE / "configs"
WEIGHTS = ASSETS / "weights"
SAMPLE = ASSETS / "sample"
NAMED_WEIGHTS = {
    "weaksup": WEIGHTS / "fsdiffreg_acdc_weaksup_v2.pt",  # the paper's losses + Dice of warped training labels
    "paper": WEIGHTS / "fsdiffreg_acdc_cpu.pt",  # the paper's unsupervised losses only
}
BUNDLED_WEIGHTS = NAMED_WEIGHTS["weaksup"]  # the default (model card: validation decides)
SEGMENTATION_WEIGHTS = WEIGHTS / "fsdiffreg_acdc_segment_v2.pt"  # RV, Myo, LV labels (docs/segmentation-model-card.md)


def weights_path(name_or_path: str | Path | None) -> Path:
    """None: the default weights; a bundled name (``weaksup``, ``paper``) unless a file of that name exists;
    else the path itself."""
    if name_or_path is None:
        return BUNDLED_WEIGHTS
    if str(name_or_path) in NAMED_WEIGHTS and not Path(name_or_path).exists():
        return NAMED_WEIGHTS[str(name_or_path)]
    return Path(name_or_path)


def segmentation_weights_path(name_or_path: str | Path | None) -> Path:
    """None: the bundled segmentation weights; else the path itself."""
    return SEGMENTATION_WEIGHTS if name_or_path is None else Path(name_or_path)


def sample_pair() -> dict[str, Path]:
    """The bundled sample (ACDC patient 091): fixed (ED), moving (ES) and their labels."""
    return {
        "fixed": SAMPLE / "acdc091_ED.nii.gz",
        "moving": SAMPLE / "acdc091_ES.nii.gz",
        "fixed_labels": SAMPLE / "acdc091_ED_labels.nii.gz",
        "moving_labels": SAMPLE / "acdc091_ES_labels.nii.gz",
    }
