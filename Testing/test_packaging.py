"""``pip install .`` (not editable) gives a working ``fsdiffreg``: the bundled files travel as package data.

The wheel is built from a copy of the sources and installed into a fresh venv in tmp. That venv
reaches torch and the other dependencies through a ``.pth`` line naming this environment's
site-packages (no reinstall, no network), and runs from a tmp folder, so the repository's own
FSDiffRegLib cannot be imported there: the commands use the installed copy alone.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from FSDiffRegLib.defaults import REFINE_STEPS

ROOT = Path(__file__).resolve().parent.parent
DATA_FOLDERS = ("assets/weights", "assets/sample", "configs")

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env)
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if int(importlib.metadata.version("setuptools").split(".")[0]) < 77:
        pytest.skip("building the wheel offline needs setuptools>=77 here (it is in the test extra)")
    tmp = tmp_path_factory.mktemp("packaging")
    source = tmp / "source"
    shutil.copytree(ROOT / "FSDiffRegLib", source / "FSDiffRegLib", ignore=shutil.ignore_patterns("__pycache__"))
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *ROOT.glob("LICENSE*")]:
        shutil.copy(path, source)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir",
         str(tmp / "dist"), str(source)], cwd=tmp)
    shutil.rmtree(source)
    return next((tmp / "dist").glob("fsdiffreg-*.whl"))


@pytest.fixture(scope="module")
def venv(wheel: Path) -> Path:
    """A fresh venv with the wheel installed, the dependencies borrowed from this environment."""
    venv = wheel.parent.parent / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=wheel.parent)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", "--no-index",
         str(wheel)], cwd=wheel.parent)
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=venv).stdout
    (Path(site.strip()) / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


def test_wheel_holds_the_bundled_files(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for folder in DATA_FOLDERS:
        files = [p for p in (ROOT / "FSDiffRegLib" / folder).iterdir() if p.is_file()]
        assert files, folder
        for path in files:
            assert path.relative_to(ROOT).as_posix() in names


def test_installed_demo_and_register_work(venv, tmp_path):
    where = run([str(venv / "bin" / "python"), "-c", "import FSDiffRegLib; print(FSDiffRegLib.__file__)"],
                cwd=tmp_path).stdout.strip()
    package = Path(where).parent
    assert package.is_relative_to(venv) and not package.is_relative_to(ROOT)
    fsdiffreg = str(venv / "bin" / "fsdiffreg")

    run([fsdiffreg, "demo", "--out-dir", "demo", "--device", "cpu"], cwd=tmp_path)
    assert {p.name for p in (tmp_path / "demo").iterdir()} == {
        "displacement.nii.gz", "warped.nii.gz", "jacobian.nii.gz", "warped_labels.nii.gz", "metrics.json",
        "figure.png"}

    sample = package / "assets" / "sample"
    run([fsdiffreg, "register", str(sample / "acdc091_ED.nii.gz"), str(sample / "acdc091_ES.nii.gz"),
         "--out-dir", "out", "--refine", str(REFINE_STEPS), "--device", "cpu"], cwd=tmp_path)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["weights"] == "fsdiffreg_acdc_weaksup_v2.pt" and metrics["ncc_after"] > metrics["ncc_before"]
    assert metrics["refine"]["heart"]  # the refinement's heart head ships too

    devices = json.loads(run([fsdiffreg, "devices"], cwd=tmp_path).stdout)
    assert "cpu" in devices["devices"]
