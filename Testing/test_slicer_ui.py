"""Static checks of the Slicer module, which needs the full Slicer application to run:
the .ui and the module code agree, parameters bind to suitable widgets, the packaging
files are consistent, and nothing heavy is imported by the GUI or Qt by the MRML layer."""

from __future__ import annotations

import ast
import json
import py_compile
import re
import struct
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULE = ROOT / "FSDiffReg"
SOURCE = MODULE / "FSDiffReg.py"
UI = MODULE / "Resources" / "UI" / "FSDiffReg.ui"
MRML = MODULE / "FSDiffRegMRML"
sys.path.insert(0, str(MODULE))
from FSDiffRegLib.defaults import MAX_STEPS  # noqa: E402
from FSDiffRegMRML.process import RegisterOptions  # noqa: E402

#: The widget class each kind of parameter must be bound to (Slicer's GUI connectors).
WIDGET_FOR = {"choice": "QComboBox", "int": "QSpinBox", "float": "QDoubleSpinBox", "bool": "QCheckBox",
              "node": "qMRMLNodeComboBox"}
#: Parameters the widget binds itself (no connector of 5.8 to 5.12 binds a str to a path field), and their widget.
BOUND_BY_HAND = {"weightsFile": "weightsPathLineEdit"}


def module_tree() -> ast.Module:
    return ast.parse(SOURCE.read_text())


def parameter_fields() -> dict[str, str]:
    """Field name -> annotation source of the @parameterNodeWrapper class."""
    cls = next(node for node in module_tree().body
               if isinstance(node, ast.ClassDef) and node.name == "FSDiffRegParameterNode")
    assert any(ast.unparse(d) == "parameterNodeWrapper" for d in cls.decorator_list)
    return {s.target.id: ast.unparse(s.annotation) for s in cls.body if isinstance(s, ast.AnnAssign)}


def kind(annotation: str) -> str:
    if "Choice(" in annotation:
        return "choice"
    if "vtkMRML" in annotation:
        return "node"
    return re.sub(r"Annotated\[(\w+),.*", r"\1", annotation)


def ui_widgets() -> dict[str, ET.Element]:
    return {w.get("name"): w for w in ET.parse(UI).getroot().iter("widget")}


def parameter_names() -> dict[str, str]:
    """SlicerParameterName -> widget name, from the .ui."""
    names = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                names[prop.findtext("string")] = name
    return names


def test_module_sources_compile():
    for path in [SOURCE, *MRML.glob("*.py")]:
        py_compile.compile(str(path), doraise=True)


def test_every_widget_the_code_names_exists_in_the_ui():
    named = {node.attr for node in ast.walk(module_tree())
             if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
             and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"}
    assert named, "the module code names no widget"
    assert named <= set(ui_widgets()), sorted(named - set(ui_widgets()))


def test_every_slicer_parameter_name_is_a_field_and_every_field_has_a_widget():
    assert set(parameter_names()) == set(parameter_fields()) - set(BOUND_BY_HAND)
    source = SOURCE.read_text()
    for field, widget in BOUND_BY_HAND.items():
        assert ui_widgets()[widget].get("class") == "ctkPathLineEdit" and parameter_fields()[field] == "str"
        assert f"self.ui.{widget}.currentPathChanged.connect(" in source


@pytest.mark.parametrize("field", sorted(set(parameter_fields()) - set(BOUND_BY_HAND)))
def test_parameter_is_bound_to_a_widget_its_type_can_use(field):
    annotation = parameter_fields()[field]
    widget = ui_widgets()[parameter_names()[field]]
    assert widget.get("class") == WIDGET_FOR[kind(annotation)], annotation
    if kind(annotation) == "node":
        types = [s.text for p in widget.findall("property") if p.get("name") == "nodeTypes"
                 for s in p.iter("string")]
        assert types and all(t in annotation for t in types) and all(t in types for t in
                                                                      re.findall(r"vtkMRML\w+", annotation))


def test_the_panel_allows_the_refinement_steps_the_library_allows():
    spin_box = ui_widgets()["refineStepsSpinBox"]
    maximum = next(p for p in spin_box.findall("property") if p.get("name") == "maximum")
    assert int(maximum.findtext("number")) == MAX_STEPS
    assert parameter_fields()["refineSteps"] == "Annotated[int, WithinRange(0, RegisterOptions.maxRefineSteps)]"
    assert RegisterOptions.maxRefineSteps == MAX_STEPS


def test_every_node_selector_gets_the_scene():
    root = ET.parse(UI).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    selectors = {name for name, w in ui_widgets().items() if w.get("class") == "qMRMLNodeComboBox"}
    assert selectors and selectors <= receivers


def test_module_has_the_slicer_classes():
    classes = {node.name: [ast.unparse(b) for b in node.bases] for node in module_tree().body
               if isinstance(node, ast.ClassDef)}
    assert classes["FSDiffReg"] == ["ScriptedLoadableModule"]
    assert classes["FSDiffRegWidget"] == ["ScriptedLoadableModuleWidget", "VTKObservationMixin"]
    assert classes["FSDiffRegLogic"] == ["ScriptedLoadableModuleLogic"]
    assert classes["FSDiffRegTest"] == ["ScriptedLoadableModuleTest"]


def imported_modules(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    names = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_gui_imports_neither_torch_nor_the_library_at_import_time():
    top = imported_modules(SOURCE, top_level_only=True)
    assert not {name for name in top if name.split(".")[0] in ("torch", "FSDiffRegLib", "PyTorchUtils")}


def test_gui_never_imports_torch():
    """torch's presence and version come from package metadata, its devices from a child process."""
    assert not {name for name in imported_modules(SOURCE, top_level_only=False) if name.split(".")[0] == "torch"}
    assert "torchInstalled" not in SOURCE.read_text() and "cuda.is_available" not in SOURCE.read_text()


def test_mrml_layer_never_imports_qt_or_torch():
    for path in MRML.glob("*.py"):
        names = imported_modules(path, top_level_only=False)
        assert not {name.split(".")[0] for name in names} & {"qt", "ctk", "torch", "PyTorchUtils"}, path.name
        assert "slicer.util" not in names, path.name
        for name in (n for n in names if n.startswith("FSDiffRegLib.")):  # only the library's light modules
            library = ROOT / (name.replace(".", "/") + ".py")
            assert "torch" not in {n.split(".")[0] for n in imported_modules(library, top_level_only=True)}, name


def cmake_list(text: str, variable: str) -> list[str]:
    body = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S).group(1)
    return [item.replace("${MODULE_NAME}", "FSDiffReg") for item in body.split()]


def test_module_cmake_ships_every_module_file():
    text = (MODULE / "CMakeLists.txt").read_text()
    scripts = cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    shipped = {str(p.relative_to(MODULE)) for p in [SOURCE, *MRML.glob("*.py")]}
    assert set(scripts) == shipped
    resources = cmake_list(text, "MODULE_PYTHON_RESOURCES")
    for resource in resources:
        assert (MODULE / resource).is_file(), resource
    assert "Resources/requirements.txt" in resources  # read by ensurePythonPackages at run time
    assert "WITH_GENERIC_TESTS" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert "FSDiffRegLib/*.py" in text and "FSDiffRegLib/assets/sample/*" in text


def cmake_glob(text: str, variable: str) -> set[Path]:
    """The files ``file(GLOB variable ... RELATIVE ${PROJECT_SOURCE_DIR} patterns)`` finds in this repository."""
    body = re.search(rf"file\(GLOB {variable} (.*?)\)", text, re.S).group(1)
    prefix = "${PROJECT_SOURCE_DIR}/"
    patterns = [p.removeprefix(prefix) for p in body.split() if p.startswith(prefix)]
    return {path for pattern in patterns for path in (ROOT / pattern).parent.glob(Path(pattern).name)
            if path.is_file()}


def test_slicer_gets_the_weights_the_library_names_not_the_ablation_weights():
    """The bundled weights (FSDiffRegLib.resources), their checksums and heart heads, the segmentation model
    (the panel's Segment button) and the model card; the ablation weights only the benchmark reads stay out."""
    from FSDiffRegLib.model.weights import heart_head_path
    from FSDiffRegLib.resources import NAMED_WEIGHTS, SEGMENTATION_WEIGHTS, WEIGHTS

    installed = {p for p in cmake_glob((MODULE / "CMakeLists.txt").read_text(), "_lib_data") if p.parent == WEIGHTS}
    named = [*NAMED_WEIGHTS.values(), *(heart_head_path(w) for w in NAMED_WEIGHTS.values()), SEGMENTATION_WEIGHTS]
    expected = {WEIGHTS / "MODEL_CARD.md"} | {p for w in named for p in (w, w.with_name(w.name + ".sha256"))
                                               if p.is_file()}
    assert installed == expected, sorted(p.name for p in installed ^ expected)


def cmake_setting(name: str) -> str:
    return re.search(rf'set\({name} "(.*?)"\)', (ROOT / "CMakeLists.txt").read_text()).group(1)


def test_extension_metadata_agrees_with_the_index_entry():
    entry = json.loads((ROOT / "FSDiffReg.json").read_text())
    assert entry["$schema"].endswith("slicer-extension-catalog-entry-schema-v1.0.2.json#")
    assert entry["category"] == cmake_setting("EXTENSION_CATEGORY") == "Registration"
    assert entry["build_dependencies"] == [cmake_setting("EXTENSION_DEPENDS")] == ["PyTorch"]
    assert entry["scm_url"].startswith(cmake_setting("EXTENSION_HOMEPAGE"))
    assert "add_subdirectory(FSDiffReg)" in (ROOT / "CMakeLists.txt").read_text()


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_icons_are_128_pixel_pngs():
    for path in (ROOT / "FSDiffReg.png", MODULE / "Resources" / "Icons" / "FSDiffReg.png"):
        assert png_size(path) == (128, 128)
