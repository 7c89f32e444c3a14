"""The ACDC data set: patient folders, ED/ES frames from Info.cfg, the fixed split.

Bernard et al., "Deep Learning Techniques for Automatic MRI Cardiac Multi-structures
Segmentation and Diagnosis: Is the Problem Solved?", IEEE TMI 37(11), 2018. CC BY-NC-SA 4.0.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

TRAIN_IDS = range(1, 91)
VALIDATION_IDS = range(91, 101)
DIRECTIONS = {"es-ed": "ES->ED", "ed-es": "ED->ES"}  # --direction: ES moving onto ED fixed (the paper's), or back


@dataclass(frozen=True)
class AcdcPair:
    """ED is the fixed image, ES the moving image (the paper's protocol; ``directed`` turns it around)."""

    patient: str
    fixed: Path
    moving: Path
    fixed_labels: Path
    moving_labels: Path


def read_info(patient_dir: Path) -> dict[str, str]:
    lines = (patient_dir / "Info.cfg").read_text().splitlines()
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in lines if ":" in line)}


def load_pair(patient_dir: str | Path) -> AcdcPair:
    """The ED/ES pair of one patient folder, as named by its Info.cfg."""
    patient_dir = Path(patient_dir)
    info = read_info(patient_dir)
    name = patient_dir.name

    def frame(key: str, suffix: str = "") -> Path:
        return patient_dir / f"{name}_frame{int(info[key]):02d}{suffix}.nii.gz"

    return AcdcPair(name, frame("ED"), frame("ES"), frame("ED", "_gt"), frame("ES", "_gt"))


def directed(pair: AcdcPair, direction: str) -> AcdcPair:
    """The pair registered in ``direction`` ('es-ed': as loaded; 'ed-es': ES fixed, ED moving, labels alike)."""
    if direction == "es-ed":
        return pair
    if direction == "ed-es":
        return AcdcPair(pair.patient, pair.moving, pair.fixed, pair.moving_labels, pair.fixed_labels)
    raise ValueError(f"unknown direction {direction!r}; choose from {', '.join(DIRECTIONS)}")


def split(data_dir: str | Path, which: str) -> list[AcdcPair]:
    """Pairs of the ``train`` (001-090) or ``validation`` (091-100) split present in data_dir."""
    ids = {"train": TRAIN_IDS, "validation": VALIDATION_IDS}[which]
    root = Path(data_dir)
    if (root / "training").is_dir():
        root = root / "training"
    dirs = [root / f"patient{i:03d}" for i in ids]
    pairs = [load_pair(d) for d in dirs if (d / "Info.cfg").is_file()]
    if not pairs:
        raise FileNotFoundError(f"no ACDC {which} patients under {data_dir}")
    return pairs
