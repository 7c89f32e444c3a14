"""What the registration process needs installed, checked without importing it.

The Slicer GUI never imports torch (slow, and a crash in its initialisation would take
Slicer down): its presence and version come from the installed package metadata.
torch comes from the PyTorch extension, NumPy and SimpleITK from Slicer itself; pip
installs only what ``Resources/requirements.txt`` lists.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

#: The oldest torch FSDiffRegLib runs with.
TORCH_MINIMUM = "2.1"
#: The oldest torch built for NumPy 2 (Slicer 5.10 and later ship NumPy 2; older torch
#: cannot exchange arrays with it).
TORCH_MINIMUM_NUMPY2 = "2.3"
#: Never installed with pip: they come from the PyTorch extension and from Slicer.
NOT_FROM_PIP = ("torch", "numpy", "simpleitk")


def installedVersion(distribution: str) -> str | None:
    """The installed version of ``distribution``, or None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def torchRequirement(numpyVersion: str | None) -> str:
    """The torch version FSDiffReg needs beside this NumPy, as PyTorchUtils takes it (``">=2.3"``)."""
    numpy2 = numpyVersion is not None and Version(numpyVersion).major >= 2
    return ">=" + (TORCH_MINIMUM_NUMPY2 if numpy2 else TORCH_MINIMUM)


def torchStatus(torchVersion: str | None, numpyVersion: str | None) -> str:
    """``"missing"``, ``"old"`` (too old for FSDiffReg or for this NumPy) or ``"ok"``."""
    if torchVersion is None:
        return "missing"
    if not Requirement("torch" + torchRequirement(numpyVersion)).specifier.contains(torchVersion, prereleases=True):
        return "old"
    return "ok"


def installedTorchStatus() -> str:
    """``torchStatus`` of the torch and NumPy installed here."""
    return torchStatus(installedVersion("torch"), installedVersion("numpy"))


def readRequirements(path: Path) -> list[str]:
    """The requirement lines of a requirements file (comments, blanks and pip options skipped)."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("-")]


def missingRequirements(requirements: list[str]) -> list[str]:
    """The requirements that the installed packages do not satisfy (markers respected)."""
    missing = []
    for text in requirements:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        version = installedVersion(requirement.name)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            missing.append(text)
    return missing
