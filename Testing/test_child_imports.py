"""What the child process imports, run for real: ``register``, ``track`` and ``devices`` (the commands the Slicer
module sends its worker) on the bundled sample, in a Python of their own.

Slicer's Python has torch (the PyTorch extension), NumPy and SimpleITK, and whatever the module installs from
``Resources/requirements.txt``; it has no matplotlib, which is not listed there. Every third-party package the
loaded FSDiffRegLib modules import must be one of those (matplotlib only where pictures are drawn), and
without matplotlib the commands still finish, the picture left out.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import ROOT, SAMPLE

sys.path.insert(0, str(ROOT / "FSDiffReg"))
from FSDiffRegMRML.dependencies import NOT_FROM_PIP, readRequirements  # noqa: E402

REQUIREMENTS = ROOT / "FSDiffReg" / "Resources" / "requirements.txt"
#: Packages left out of the requirements on purpose, and the modules allowed to import them (after
#: ``plotting.pyplot`` found it, inside the drawing functions): matplotlib draws pictures the Slicer module never shows.
OPTIONAL = {"matplotlib": {"FSDiffRegLib.outputs.plotting", "FSDiffRegLib.outputs.curves",
                           "FSDiffRegLib.outputs.figure", "FSDiffRegLib.outputs.bullseye"}}
#: Runs each command given as a JSON list of argument lists, as the worker does (``cli.main``); prints one JSON
#: line: each command's exit status (or the exception that ended it) and the FSDiffRegLib modules loaded.
CHILD = """
import json, sys
{prelude}
from FSDiffRegLib.commands.cli import main
statuses = []
for args in json.loads(sys.argv[1]):
    try:
        statuses.append(main(args))
    except BaseException as err:
        statuses.append(f"{{type(err).__name__}}: {{err}}")
print(json.dumps({{"statuses": statuses, "modules": sorted(m for m in sys.modules if m.startswith("FSDiffRegLib"))}}))
"""
NO_MATPLOTLIB = "sys.modules['matplotlib'] = None  # as in Slicer's Python: importing matplotlib fails"


def commands(folder: Path, weights: Path) -> list[list[str]]:
    """register and track (a two-frame cine of the sample's ED and ES) into ``folder``, quickly; devices."""
    cine = folder / "cine"
    cine.mkdir()
    for name, frame in (("frame1", "acdc091_ED"), ("frame2", "acdc091_ES")):
        (cine / f"{name}.nii.gz").write_bytes((SAMPLE / f"{frame}.nii.gz").read_bytes())
    fast = ["--weights", str(weights), "--refine", "0", "--device", "cpu"]
    return [["register", str(SAMPLE / "acdc091_ED.nii.gz"), str(SAMPLE / "acdc091_ES.nii.gz"),
             "--out-dir", str(folder / "registered"), *fast],
            ["track", str(cine), "--labels", str(SAMPLE / "acdc091_ED_labels.nii.gz"),
             "--out-dir", str(folder / "tracked"), *fast],
            ["devices"]]


def run_child(folder: Path, weights: Path, prelude: str = "") -> tuple[dict, str]:
    """The commands in a child Python: its report and its stderr."""
    done = subprocess.run([sys.executable, "-c", CHILD.format(prelude=prelude), json.dumps(commands(folder, weights))],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]), done.stderr


def test_without_matplotlib_register_and_track_finish_without_the_picture(tmp_path, untrained_weights):
    report, stderr = run_child(tmp_path, untrained_weights, NO_MATPLOTLIB)
    assert report["statuses"] == [0, 0, 0], stderr
    assert {p.name for p in (tmp_path / "registered").iterdir()} == {
        "displacement.nii.gz", "warped.nii.gz", "jacobian.nii.gz", "metrics.json"}
    assert {p.name for p in (tmp_path / "tracked").iterdir()} == {
        "field_01.nii.gz", "field_02.nii.gz", "labels_01.nii.gz", "labels_02.nii.gz", "labels.nii.gz",
        "volumes.csv", "function.json", "strain.csv", "metrics.json"}
    skipped = [line for line in stderr.splitlines() if "matplotlib" in line]
    assert len(skipped) == 2 and skipped[0].startswith("fsdiffreg: function.png skipped: matplotlib is missing")
    assert skipped[1].startswith("fsdiffreg: strain_bullseye.png skipped: matplotlib is missing")


def third_party_imports(module: str) -> set[str]:
    """The top-level names of the packages ``module`` (of FSDiffRegLib) imports anywhere in it, outside the
    standard library."""
    tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0}
    return {name.split(".")[0] for name in names if name} - set(sys.stdlib_module_names)  # novermin (3.10: skipped)


def distribution(name: str) -> str:
    """The normalised name of the distribution that installs the import ``name`` (the name itself if none here)."""
    found = importlib.metadata.packages_distributions().get(name, [name])  # novermin (3.10: skipped)
    return re.sub(r"[-_.]+", "-", found[0]).lower()


@pytest.mark.skipif(sys.version_info < (3, 10), reason="needs sys.stdlib_module_names (Python 3.10)")
def test_every_package_the_child_imports_is_slicers_or_in_the_requirements(tmp_path, untrained_weights):
    report, stderr = run_child(tmp_path, untrained_weights)
    assert report["statuses"] == [0, 0, 0], stderr
    loaded = [m for m in report["modules"] if (ROOT / (m.replace(".", "/") + ".py")).is_file()]
    assert {"FSDiffRegLib.pipeline.register", "FSDiffRegLib.pipeline.track",
            "FSDiffRegLib.outputs.curves"} <= set(loaded)
    imported = {(distribution(name), module) for module in loaded for name in third_party_imports(module)}
    available = set(NOT_FROM_PIP) | {Requirement(line).name.lower() for line in readRequirements(REQUIREMENTS)}
    assert {package for package, _ in imported} >= {"torch", "numpy", "simpleitk", "nibabel"}
    missing = [(package, module) for package, module in imported
               if package not in available and module not in OPTIONAL.get(package, ())]
    assert sorted(missing) == []
