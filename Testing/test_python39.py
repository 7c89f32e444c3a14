"""The code runs on Python 3.9, as in Slicer 5.8 and its child process
(``PythonSlicer -m FSDiffRegLib.commands.worker``).

Imports every module under the pyenv 3.9.18 interpreter (Testing/python39_imports.py says how),
in ``.venv/py39`` where ``make venv`` made it (real NumPy, SimpleITK, matplotlib and tqdm; torch
has no small 3.9 build here and is a stand-in), else the bare interpreter with stand-ins for every
third-party package. vermin then looks for 3.10+ standard-library use inside functions, which
importing does not run (``zip(strict=)``, new modules and keywords).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV39 = ROOT / ".venv" / "py39" / "bin" / "python"


def pyenv_python39() -> Path:
    root = os.environ.get("PYENV_ROOT") or (
        subprocess.run(["pyenv", "root"], capture_output=True, text=True).stdout.strip() if shutil.which("pyenv")
        else str(Path.home() / ".pyenv"))
    return Path(root) / "versions" / "3.9.18" / "bin" / "python"


@pytest.fixture(scope="module")
def python39() -> Path:
    for candidate in (VENV39, pyenv_python39()):
        if candidate.is_file():
            return candidate
    pytest.skip(f"no Python 3.9.18 here (looked for {VENV39} and {pyenv_python39()}): install it with pyenv")


def test_every_module_imports_on_python39(python39, tmp_path):
    run = subprocess.run([str(python39), "-I", str(ROOT / "Testing" / "python39_imports.py")],
                         capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout)
    assert report["python"].startswith("3.9.")
    expected = {f"FSDiffRegLib.{p.stem}" for p in (ROOT / "FSDiffRegLib").glob("*.py") if p.stem != "__init__"}
    expected |= {f"FSDiffRegMRML.{p.stem}" for p in (ROOT / "FSDiffReg" / "FSDiffRegMRML").glob("*.py")
                 if p.stem != "__init__"}
    assert expected | {"FSDiffReg"} <= set(report["modules"])
    assert {"slicer", "qt", "vtk"} <= set(report["stand_ins"])
    if python39 == VENV39:
        assert {"numpy", "SimpleITK"} <= set(report["real"]) and report["sample_prepared"], report


def test_no_standard_library_use_newer_than_python39():
    vermin = Path(sys.executable).with_name("vermin")
    if not vermin.is_file():
        pytest.skip(f"no vermin beside {sys.executable}: it is in the test extra (pip install -e .[test])")
    run = subprocess.run([str(vermin), "--target=3.9-", "--violations", "--no-tips", "FSDiffRegLib", "FSDiffReg",
                          "Testing"], capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_worker_serves_commands_on_python39(python39):
    """The worker loop as Slicer 5.8's PythonSlicer runs it: a refused command, then the next one."""
    worker = subprocess.Popen([str(python39), "-m", "FSDiffRegLib.commands.worker"], cwd=ROOT, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(2):
            worker.stdin.write(json.dumps({"args": ["register", "only-one-image"]}) + "\n")
            worker.stdin.flush()
            lines = [worker.stdout.readline().strip() for _ in range(2)]
            assert "the following arguments are required" in lines[0] and lines[1] == "fsdiffreg: finished 2"
    finally:
        worker.stdin.close()
        assert worker.wait(timeout=30) == 0
