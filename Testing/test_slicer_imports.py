"""Loading the module's MRML layer (which Slicer does at every start) imports neither SimpleITK nor torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

MODULE = Path(__file__).resolve().parent.parent / "FSDiffReg"
LAYER = ["FSDiffRegMRML." + path.stem for path in sorted((MODULE / "FSDiffRegMRML").glob("*.py"))
         if path.stem != "__init__"]


def test_mrml_layer_imports_no_simpleitk_and_no_torch():
    code = (f"import sys, json; sys.path.insert(0, {str(MODULE)!r})\n"
            f"for name in {LAYER!r}: __import__(name)\n"
            "print(json.dumps(sorted(m for m in ('SimpleITK', 'torch') if m in sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert {'FSDiffRegMRML.registration_outputs', 'FSDiffRegMRML.process'} <= set(LAYER)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
