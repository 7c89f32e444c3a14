"""The package's layout: subpackages by concern that open with a one-line docstring and load no torch, and the
import contracts of pyproject.toml (layers, no cycles, a torch-free Slicer layer) kept."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT

LIBRARY = ROOT / "FSDiffRegLib"
SUBPACKAGES = sorted(p.parent.name for p in LIBRARY.glob("*/__init__.py"))


def test_each_subpackage_opens_with_a_one_line_docstring_and_nothing_else():
    assert SUBPACKAGES == ["commands", "evaluation", "imaging", "model", "outputs", "pipeline", "training"]
    for name in SUBPACKAGES:
        tree = ast.parse((LIBRARY / name / "__init__.py").read_text(encoding="utf-8"))
        docstring = ast.get_docstring(tree)
        assert docstring and "\n" not in docstring and len(tree.body) == 1, name


def test_importing_the_subpackages_and_the_basics_loads_no_torch():
    modules = [f"FSDiffRegLib.{name}" for name in SUBPACKAGES] + [
        "FSDiffRegLib.labels", "FSDiffRegLib.events", "FSDiffRegLib.defaults", "FSDiffRegLib.resources",
        "FSDiffRegLib.errors", "FSDiffRegLib.files", "FSDiffRegLib.commands.cli"]
    code = (f"import importlib, json, sys\nfor m in {modules!r}:\n    importlib.import_module(m)\n"
            "print(json.dumps(sorted(m for m in ('torch', 'SimpleITK', 'numpy') if m in sys.modules)))")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout) == []


def test_the_import_contracts_hold():
    """Layers (commands > evaluation, training > pipeline > outputs > imaging > model > basics), no cycle between
    modules or subpackages, and no torch for the Slicer GUI's process (pyproject.toml, [tool.importlinter])."""
    linter = shutil.which("lint-imports", path=os.path.dirname(sys.executable))
    if linter is None:
        pytest.skip("import-linter is not installed (pip install -e '.[test]')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "FSDiffReg")]),
           "PYTHONIOENCODING": "utf-8"}
    run = subprocess.run([linter, "--no-cache"], cwd=ROOT, env=env, capture_output=True, encoding="utf-8", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:]
    assert "Contracts: 4 kept, 0 broken." in run.stdout


def test_one_name_one_thing_across_the_library_and_the_slicer_layer():
    """No two classes (two Worker, two InputError) or modules (two outputs.py) of one name."""
    files = [*LIBRARY.rglob("*.py"), *(ROOT / "FSDiffReg" / "FSDiffRegMRML").glob("*.py")]
    classes: dict[str, list[str]] = {}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                classes.setdefault(node.name, []).append(path.name)
    assert {name: where for name, where in classes.items() if len(where) > 1} == {}
    stems = [path.stem for path in files if path.stem != "__init__"]
    assert sorted({stem for stem in stems if stems.count(stem) > 1}) == []


def test_the_slicer_layer_shares_the_library_s_input_error_and_labels():
    sys.path.insert(0, str(ROOT / "FSDiffReg"))
    from FSDiffRegLib import errors, labels
    from FSDiffRegMRML import cine_inputs, inputs

    assert inputs.InputError is errors.InputError
    assert cine_inputs.STRUCTURES is labels.STRUCTURES and cine_inputs.COLORS is labels.COLORS


def test_only_the_commands_parse_arguments():
    """argparse (and argparse.Namespace) only in commands/: the library takes typed options."""
    importers = []
    for path in LIBRARY.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name.split(".")[0] == "argparse" for name in names):
                importers.append(path.relative_to(LIBRARY).as_posix())
    assert [p for p in importers if not p.startswith("commands/")] == []
    assert "commands/cli.py" in importers


def test_the_pipeline_neither_reads_nor_writes_files():
    """pipeline/ works on images in memory; the commands read the inputs and write the sets (commands/*_file(s))."""
    file_functions = {"read_image", "read_cine", "write_image", "write_field", "write_json", "write_metrics",
                      "output_folder", "written", "replaced_whole"}
    used = {}
    for path in (LIBRARY / "pipeline").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                found = file_functions & {alias.name for alias in node.names}
                if found:
                    used[path.name] = sorted(found)
    assert used == {}


def test_each_heart_name_says_which_heart():
    """"Heart" means four things (docs/architecture.md): each module, top-level name and model attribute with
    "heart" in it says which: the heart head, the heart grid, the heart box or the heart labels."""
    which = ("heart_head", "hearthead", "heart_grid", "heart_box", "heart_labels", "labelled_heart")
    names = []
    for path in LIBRARY.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names.append((path.stem, path.relative_to(LIBRARY).as_posix()))
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                names.append((node.name, path.name))
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names += [(t.id, path.name) for t in targets if isinstance(t, ast.Name)]
        names += [(node.attr, path.name) for node in ast.walk(tree) if isinstance(node, ast.Attribute)
                  and isinstance(node.value, ast.Name) and node.value.id in ("self", "model")]
    vague = sorted({f"{name} ({where})" for name, where in names
                    if "heart" in name.lower() and not any(w in name.lower() for w in which)})
    assert vague == []
