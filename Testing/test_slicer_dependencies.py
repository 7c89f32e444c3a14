"""FSDiffRegMRML.dependencies: torch's presence and version from the installed packages'
metadata (never importing torch), and the module's own requirements file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "FSDiffReg"))

from FSDiffRegMRML.dependencies import (  # noqa: E402
    NOT_FROM_PIP,
    installedTorchStatus,
    installedVersion,
    missingRequirements,
    readRequirements,
    torchRequirement,
    torchStatus,
)

REQUIREMENTS = ROOT / "FSDiffReg" / "Resources" / "requirements.txt"


@pytest.mark.parametrize(("torch", "numpy", "status"), [
    (None, "1.26.4", "missing"),
    ("2.0.1", "1.26.4", "old"),
    ("2.1.0+cu118", "1.26.4", "ok"),  # Slicer 5.8: NumPy 1
    ("2.2.2", "2.0.2", "old"),  # Slicer 5.10+: NumPy 2 needs torch 2.3
    ("2.3.0", "2.0.2", "ok"),
    ("2.5.1+cpu", None, "ok"),
])
def test_torch_status(torch, numpy, status):
    assert torchStatus(torch, numpy) == status


def test_torch_requirement_follows_numpy():
    requirements = torchRequirement("1.26.4"), torchRequirement("2.0.2"), torchRequirement(None)
    assert requirements == (">=2.1", ">=2.3", ">=2.1")


def test_installed_versions_come_from_metadata_without_importing_torch():
    code = ("import sys; from FSDiffRegMRML.dependencies import installedTorchStatus, installedVersion; "
            "print(installedVersion('torch'), installedTorchStatus(), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "FSDiffReg",
                          check=True)
    version, status, imported = done.stdout.split()
    assert (version, status, imported) == (installedVersion("torch"), installedTorchStatus(), "False")
    assert installedVersion("surely-not-an-installed-package") is None


def test_requirements_file_never_names_what_pip_must_not_install():
    requirements = readRequirements(REQUIREMENTS)
    names = {Requirement(line).name.lower() for line in requirements}
    assert not names & set(NOT_FROM_PIP)
    assert missingRequirements(requirements) == []  # what FSDiffRegLib needs here is installed


def test_read_and_check_requirements(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("# comment\n\n-c constraints.txt\nnumpy>=1.0  # installed\nnumpy>=999\n"
                    "surely-not-an-installed-package>=1\nsomething; sys_platform == 'nowhere'\n")
    requirements = readRequirements(path)
    assert requirements == ["numpy>=1.0", "numpy>=999", "surely-not-an-installed-package>=1",
                            "something; sys_platform == 'nowhere'"]
    assert missingRequirements(requirements) == ["numpy>=999", "surely-not-an-installed-package>=1"]
