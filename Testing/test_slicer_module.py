"""FSDiffReg/FSDiffReg.py itself, run on Slicer's own parameterNodeWrapper of each supported
release (5.8.1, 5.10.0, 5.12.3) and slicer-core's real MRML; only Qt, CTK and the GUI names
of Slicer are stand-ins (Testing/slicer_standins.py)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
import types
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname, urlretrieve

import pytest
import slicer
import vtk
from slicer.util import tryWithErrorDisplay

import slicer_standins as standins
from FSDiffRegLib.commands.work_folders import process_exists
from FSDiffRegLib.defaults import DEFAULT_STEPS
from FSDiffRegLib.resources import SAMPLE, sample_pair

UI = standins.MODULE_FILE.parent / "Resources" / "UI" / "FSDiffReg.ui"
PY39 = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions" / "3.9.18" / "bin" / "python"
NODE_FIELDS = ("fixedVolume", "movingVolume", "movingLabels", "outputTransform", "warpedVolume", "jacobianVolume",
               "warpedLabels", "cineVolumes", "cineLabels", "cineTransforms", "cineSegmentations", "cineTable",
               "cineFunctionTable", "cineChart", "cineBrowser")

pytestmark = pytest.mark.skipif(not standins.SLICER_PYTHON.is_dir(),
                                reason=f"Slicer's parameterNodeWrapper not found at {standins.SLICER_PYTHON}")


@pytest.fixture(params=standins.RELEASES)
def module(request):
    """FSDiffReg.py loaded on ``release``'s parameterNodeWrapper, with a real scene as slicer.mrmlScene."""
    savedModules, savedSlicer = dict(sys.modules), dict(vars(slicer))
    standins.install(request.param, slicer.vtkMRMLScene())
    yield standins.loadModuleFile()
    for name in set(sys.modules) - set(savedModules):
        del sys.modules[name]
    sys.modules.update(savedModules)
    for name in set(vars(slicer)) - set(savedSlicer):
        delattr(slicer, name)
    vars(slicer).update(savedSlicer)


def addNodes(scene) -> dict:
    """One node of each type the parameter node refers to, in ``scene``."""
    names = {"fixed": "vtkMRMLScalarVolumeNode", "moving": "vtkMRMLScalarVolumeNode",
             "segmentation": "vtkMRMLSegmentationNode", "labelmap": "vtkMRMLLabelMapVolumeNode",
             "transform": "vtkMRMLGridTransformNode", "warped": "vtkMRMLScalarVolumeNode",
             "jacobian": "vtkMRMLScalarVolumeNode", "cine": "vtkMRMLSequenceNode", "transforms": "vtkMRMLSequenceNode",
             "segmentations": "vtkMRMLSequenceNode", "table": "vtkMRMLTableNode", "function": "vtkMRMLTableNode",
             "chart": "vtkMRMLPlotChartNode", "browser": "vtkMRMLSequenceBrowserNode"}
    return {name: scene.AddNewNodeByClass(cls, name) for name, cls in names.items()}


def test_fresh_parameter_node_has_the_defaults(module):
    parameters = module.FSDiffRegLogic().getParameterNode()  # TypeError 'Unable to write value None' before
    assert all(getattr(parameters, field) is None for field in NODE_FIELDS)
    assert (parameters.device, parameters.refineSteps, parameters.smoothness) == ("Auto", DEFAULT_STEPS, 0.0)
    assert (parameters.showGrid, parameters.gridMode) == (False, "Grid")
    assert parameters.weightsFile == ""


def withSequences(scene):
    """``scene`` with Slicer's sequences logic, which registers the browser node class (as in the application)."""
    logic = slicer.vtkSlicerSequencesLogic()
    logic.SetMRMLScene(scene)
    return logic


def test_every_field_is_written_read_saved_and_loaded_back(module, tmp_path):
    scene = slicer.mrmlScene
    logics = [withSequences(scene)]
    nodes = addNodes(scene)
    assert all(nodes.values())
    parameters = module.FSDiffRegLogic().getParameterNode()
    for labels in (nodes["segmentation"], nodes["labelmap"], None):
        parameters.movingLabels = parameters.warpedLabels = labels
        assert parameters.movingLabels is labels and parameters.warpedLabels is labels
    values = {"fixedVolume": nodes["fixed"], "movingVolume": nodes["moving"], "movingLabels": nodes["segmentation"],
              "outputTransform": nodes["transform"], "warpedVolume": nodes["warped"],
              "jacobianVolume": nodes["jacobian"], "warpedLabels": nodes["labelmap"], "device": "CPU",
              "refineSteps": 5, "smoothness": 2.5, "weightsFile": str(tmp_path / "mine.pt"), "showGrid": True,
              "gridMode": "Glyph", "cineVolumes": nodes["cine"], "referenceFrame": 19, "cineLabels": nodes["labelmap"],
              "cineTransforms": nodes["transforms"], "cineSegmentations": nodes["segmentations"],
              "cineTable": nodes["table"], "cineFunctionTable": nodes["function"], "cineChart": nodes["chart"],
              "cineBrowser": nodes["browser"]}
    assert set(values) == set(module.FSDiffRegParameterNode.allParameters)
    for field, value in values.items():
        setattr(parameters, field, value)
    for field, value in values.items():
        assert getattr(parameters, field) == value, field

    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    loaded = slicer.vtkMRMLScene()
    logics.append(withSequences(loaded))
    loaded.SetURL(str(tmp_path / "scene.mrml"))
    assert loaded.Import()
    node = loaded.GetSingletonNode("FSDiffReg", "vtkMRMLScriptedModuleNode")
    reloaded = module.FSDiffRegParameterNode(node)
    for field, value in values.items():
        got = getattr(reloaded, field)
        if field in NODE_FIELDS:
            assert (got.GetID(), got.GetClassName()) == (value.GetID(), value.GetClassName()), field
        else:
            assert got == value, field


def test_default_weights_are_not_an_install_path_in_the_saved_scene(module, tmp_path):
    parameters = module.FSDiffRegLogic().getParameterNode()
    slicer.mrmlScene.SetURL(str(tmp_path / "scene.mrml"))
    assert slicer.mrmlScene.Commit()
    saved = (tmp_path / "scene.mrml").read_text()
    assert "weightsFile" in saved and "FSDiffRegLib" not in saved and "fsdiffreg_acdc" not in saved
    assert module.FSDiffRegLogic.options(parameters).weights == ""  # the process's own default: the bundled weights
    parameters.weightsFile = str(tmp_path / "missing.pt")
    with pytest.raises(module.InputError, match="missing.pt"):
        module.FSDiffRegLogic.options(parameters)


def test_parameter_node_class_works_however_slicer_loads_the_file(module):
    """Slicer may execute the file before it is in sys.modules: field types must not need it."""
    loose = standins.loadModuleFile("FSDiffRegLoose", register=False)
    parameters = loose.FSDiffRegLogic().getParameterNode()
    parameters.movingLabels = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    assert parameters.movingLabels.IsA("vtkMRMLLabelMapVolumeNode")


class FakeDeviceQuery:
    """process.DeviceQuery's interface: answers on the second poll."""

    answer = {"torch": "2.5.0", "devices": ["cpu"], "error": None}

    def __init__(self, python):
        self.polls, self.cancelled = 0, False

    def poll(self):
        self.polls += 1
        return self.answer if self.polls > 1 else None

    def cancel(self):
        self.cancelled = True


def designerUi() -> types.SimpleNamespace:
    """Stand-in widgets for every widget of the .ui, of the classes Slicer's connectors expect."""
    qt, ctk = sys.modules["qt"], sys.modules["ctk"]
    classes = {"QComboBox": qt.QComboBox, "QSpinBox": qt.QSpinBox, "QDoubleSpinBox": qt.QDoubleSpinBox,
               "QCheckBox": qt.QCheckBox, "ctkPathLineEdit": ctk.ctkPathLineEdit,
               "qMRMLNodeComboBox": slicer.qMRMLNodeComboBox}
    ui = {}
    for widget in ET.parse(UI).getroot().iter("widget"):
        parameter = next((p.findtext("string") for p in widget.findall("property")
                          if p.get("name") == "SlicerParameterName"), "")
        make = classes.get(widget.get("class"))
        ui[widget.get("name")] = make(parameter) if make else standins.Widget(parameter, value=0, text="")
    return types.SimpleNamespace(**ui)


@pytest.fixture
def widget(module, monkeypatch):
    """The module's real widget after its real setup(), on stand-in widgets."""
    ui = designerUi()
    uiWidget = standins.Widget()
    uiWidget.setMRMLScene = lambda scene: None
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: uiWidget)
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda widget: ui)
    monkeypatch.setattr(module, "DeviceQuery", FakeDeviceQuery, raising=False)
    monkeypatch.setattr(module, "pythonSlicerExecutable", lambda: sys.executable, raising=False)
    monkeypatch.setattr(module, "installedVersion", lambda name: "2.5.0", raising=False)
    widget = module.FSDiffRegWidget(standins.ModuleParent())
    widget.setup()
    widget.parent.isEntered = True
    widget.enter()
    widget.calls = 0  # how often onParameterChanged ran (it updates the deformation display each time)
    updateDeformationDisplay = widget.updateDeformationDisplay
    widget.updateDeformationDisplay = lambda: (setattr(widget, "calls", widget.calls + 1), updateDeformationDisplay())
    yield widget
    widget.cleanup()


def parameterWidgets(ui) -> list:
    return [w for w in vars(ui).values() if w.property("SlicerParameterName")]


def fields(module) -> int:
    """How many parameters the parameter node connects to widgets (all but weightsFile, bound by the widget)."""
    return len(module.FSDiffRegParameterNode.allParameters) - 1


def test_entering_again_and_again_connects_the_gui_once(module, widget):
    for _ in range(4):
        widget.exit()
        widget.enter()
        widget.setParameterNode(widget.logic.getParameterNode())
    assert [w.connections() for w in parameterWidgets(widget.ui)] == [1] * fields(module)
    spinBox = widget.ui.refineStepsSpinBox
    spinBox.writes.clear()
    widget.calls = 0
    module.FSDiffRegLogic().getParameterNode().refineSteps = 7
    assert (spinBox.value, spinBox.writes["value"], widget.calls) == (7, 1, 1)

    widget.calls = 0
    widget.exit()
    module.FSDiffRegLogic().getParameterNode().refineSteps = 8
    assert widget.calls == 0  # our own observer goes on exit, whatever the release


def test_transform_display_is_applied_only_when_its_parameters_change(module, widget):
    """What the user sets in Transforms or Data stays, unless Show grid, its mode or the transform change."""
    parameters = widget.logic.getParameterNode()
    transform = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLGridTransformNode")
    parameters.outputTransform = transform
    display = transform.GetDisplayNode()
    assert display is not None and not display.GetVisibility2D() and display.GetGridSpacingMm() == 5.0
    display.SetGridSpacingMm(12.0)  # the user's own choices, in the Transforms module
    display.SetVisibility2D(True)
    parameters.refineSteps = 7
    widget.exit()
    widget.enter()
    assert display.GetGridSpacingMm() == 12.0 and display.GetVisibility2D()
    parameters.gridMode = "Glyph"
    assert display.GetVisualizationMode() == display.VIS_MODE_GLYPH and not display.GetVisibility2D()
    parameters.showGrid = True
    assert display.GetVisibility2D()


def test_no_weights_file_is_an_empty_field_and_an_empty_parameter(module, widget, tmp_path):
    field, parameters = widget.ui.weightsPathLineEdit, widget.logic.getParameterNode()
    assert (field.currentPath, parameters.weightsFile) == ("", "")  # not Path("") shown as "."
    chosen = str(tmp_path / "mine.pt")
    field.currentPath = chosen
    field.currentPathChanged.emit(chosen)
    assert widget.logic.getParameterNode().weightsFile == chosen
    field.currentPath = ""
    field.currentPathChanged.emit("")
    assert (field.currentPath, widget.logic.getParameterNode().weightsFile) == ("", "")
    parameters.weightsFile = chosen
    assert field.currentPath == chosen
    parameters.parameterNode.SetParameter("weightsFile", ".")  # as scenes saved with a Path field hold it
    assert field.currentPath == "" and module.FSDiffRegLogic.options(parameters).weights == ""


def test_scene_close_moves_the_gui_to_the_new_parameter_node(module, widget):
    slicer.mrmlScene.Clear(0)  # the parameter node is a singleton: kept, and reset
    assert [w.connections() for w in parameterWidgets(widget.ui)] == [1] * fields(module)
    old = widget.logic.getParameterNode()
    slicer.mrmlScene.Clear(1)  # singletons removed too: a new parameter node
    assert [w.connections() for w in parameterWidgets(widget.ui)] == [1] * fields(module)
    new = widget.logic.getParameterNode()
    assert new.parameterNode is not old.parameterNode
    widget.ui.refineStepsSpinBox.value = 9
    widget.ui.refineStepsSpinBox.valueChanged.emit(9)
    assert (new.refineSteps, old.refineSteps) == (9, DEFAULT_STEPS)
    widget.cleanup()
    assert [w.connections() for w in parameterWidgets(widget.ui)] == [0] * fields(module)


def fakeJob(jobClass, line: str, progress: int, outputs=None):
    """A job's interface (``jobClass``: TrackingJob, SegmentationJob) without a process: one log line, a fixed
    progress, finished when told."""

    class FakeJob(jobClass):
        def __init__(self):
            self.cancelled, self.done, self.cine = False, False, None

        def poll(self):
            return [line]

        @property
        def finished(self):
            return self.done

        @property
        def progress(self):
            return progress

        def cancel(self):
            self.cancelled = True

        def outputs(self):
            return outputs

    return FakeJob()


def fakeTrackingJob(module, outputs=None):
    """A TrackingJob without a process: 30 %."""
    return fakeJob(module.TrackingJob, "fsdiffreg: network 6/20 frames", 30, outputs)


@pytest.fixture
def quietPanel(widget, monkeypatch):
    """The widget with errors raised (not shown in a dialog) and the log kept in a list."""
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", lambda *args, **kwargs: contextlib.nullcontext())
    widget.log = []
    widget.ui.logText.appendPlainText = widget.log.append
    widget.ui.logText.clear = widget.log.clear
    return widget


def test_track_turns_into_cancel_and_blocks_register_until_cancelled(module, quietPanel, monkeypatch):
    widget, ui = quietPanel, quietPanel.ui
    job = fakeTrackingJob(module)
    monkeypatch.setattr(widget.logic, "checkTracking", lambda parameters: None)
    monkeypatch.setattr(widget.logic, "startTracking", lambda parameters: job)
    widget.onTrackButton()
    assert (ui.trackButton.text, ui.registerButton.text) == ("Cancel", "Register")
    assert not ui.registerButton.enabled and ui.trackButton.enabled
    assert not any(w.enabled for w in (ui.cineInputsWidget, ui.inputsCollapsibleButton, ui.advancedCollapsibleButton))
    widget.onPoll()
    assert ui.progressBar.value == 30 and widget.log == ["fsdiffreg: network 6/20 frames"]
    widget.onTrackButton()
    assert job.cancelled and widget._job is None and widget.log[-1] == "Cancelled."
    assert (ui.trackButton.text, ui.registerButton.text) == ("Track", "Register")
    assert ui.registerButton.enabled and ui.trackButton.enabled and ui.cineInputsWidget.enabled


def test_finished_tracking_fills_the_parameter_node_and_the_panel(module, quietPanel, monkeypatch):
    widget, scene = quietPanel, slicer.mrmlScene
    logic = withSequences(scene)
    nodes = [scene.AddNewNodeByClass(cls) for cls in ("vtkMRMLSequenceNode", "vtkMRMLSequenceNode", "vtkMRMLTableNode",
                                                       "vtkMRMLTableNode", "vtkMRMLPlotChartNode",
                                                       "vtkMRMLSequenceBrowserNode")]
    function = {"frames": 20, "ED_frame": 19, "ES_frame": 8, "LV": {"EF_percent": 25.84}}
    outputs = module.CineOutputs(*nodes[:5], [], nodes[5], function, {"seconds": 30.0, "device": "cpu"})
    shown = []
    monkeypatch.setattr(module, "showCineOutputs", lambda outputs, cine: shown.append(outputs))
    job = fakeTrackingJob(module, outputs)
    monkeypatch.setattr(widget.logic, "checkTracking", lambda parameters: None)
    monkeypatch.setattr(widget.logic, "startTracking", lambda parameters: job)
    widget.onTrackButton()
    job.done = True
    widget.onPoll()
    parameters = widget.logic.getParameterNode()
    fields = ("cineTransforms", "cineSegmentations", "cineTable", "cineFunctionTable", "cineChart", "cineBrowser")
    assert [getattr(parameters, field) for field in fields] == nodes
    assert widget.ui.cineBrowserSelector.currentNode() is nodes[5]
    assert widget.ui.cineChartSelector.currentNode() is nodes[4]
    assert widget.ui.summaryLabel.text == "ED frame 19, ES frame 8, LV EF 25.8 %; 20 frames in 30.0 s on cpu"
    assert shown == [outputs] and widget.ui.progressBar.value == 100 and widget._job is None
    assert widget.ui.trackButton.text == "Track" and logic is not None


def multivolume(scene, frames: int = 3):
    """A node as MultiVolumeImporter makes a multivolume (a vtkMRMLMultiVolumeNode, which slicer-core lacks: its
    base class vtkMRMLScalarVolumeNode), an image with one component per frame and its MultiVolume.* attributes."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{frames} frames NIfTI MultiVolume")
    image = vtk.vtkImageData()
    image.SetDimensions(4, 4, 3)
    image.AllocateScalars(vtk.VTK_SHORT, frames)
    node.SetAndObserveImageData(image)
    for name, value in (("FrameLabels", ",".join(str(0.04 * k) for k in range(frames))),
                        ("NumberOfFrames", str(frames)), ("FrameIdentifyingDICOMTagName", ""),
                        ("FrameIdentifyingDICOMTagUnits", "")):
        node.SetAttribute(f"MultiVolume.{name}", value)
    return node


def test_a_multivolume_cine_is_kept_saved_and_loaded_back(module, tmp_path):
    """The cine field takes a multivolume (a scalar volume subclass) in every release's wrapper, and a sequence."""
    scene = slicer.mrmlScene
    logic = withSequences(scene)
    parameters = module.FSDiffRegLogic().getParameterNode()
    cine = multivolume(scene)
    parameters.cineVolumes = cine
    assert parameters.cineVolumes is cine
    scene.SetURL(str(tmp_path / "scene.mrml"))
    assert scene.Commit()
    loaded = slicer.vtkMRMLScene()
    loadedLogic = withSequences(loaded)
    loaded.SetURL(str(tmp_path / "scene.mrml"))
    assert loaded.Import()
    reloaded = module.FSDiffRegParameterNode(loaded.GetSingletonNode("FSDiffReg", "vtkMRMLScriptedModuleNode"))
    assert reloaded.cineVolumes.GetID() == cine.GetID()
    assert reloaded.cineVolumes.GetAttribute("MultiVolume.NumberOfFrames") == "3"
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    parameters.cineVolumes = sequence
    assert parameters.cineVolumes is sequence and logic is not None and loadedLogic is not None


def test_the_cine_selector_lists_sequences_and_multivolumes(module, widget):
    """The wrapper sets the selector's node types from the field (sequences, scalar volumes); the widget keeps
    only the scalar volumes that are multivolumes (their MultiVolume.NumberOfFrames attribute)."""
    selector = widget.ui.cineVolumesSelector
    assert tuple(selector.nodeTypes) == ("vtkMRMLSequenceNode", "vtkMRMLScalarVolumeNode")
    assert selector.attributes == {"vtkMRMLScalarVolumeNode": ("MultiVolume.NumberOfFrames", None)}


@pytest.fixture
def shownIn(module, monkeypatch):
    """Stand-ins for what showCineOutputs drives: the sequences module, slice views and plot layout."""
    shown = types.SimpleNamespace(sequences=standins.SequencesModule(), layers=[], charts=[])
    plots = types.SimpleNamespace(logic=lambda: types.SimpleNamespace(ShowChartInLayout=shown.charts.append))
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(sequences=shown.sequences, plots=plots),
                        raising=False)
    monkeypatch.setattr(slicer.util, "setSliceViewerLayers", lambda **kwargs: shown.layers.append(kwargs))
    return shown


def test_outputs_are_shown_in_the_cines_own_browser(module, shownIn):
    """The toolbar shows the browser the outputs joined (Slicer's showSequenceBrowser); the slice views the cine's
    proxy there: no second browser, no second proxy of the cine."""
    scene = slicer.mrmlScene
    logic = withSequences(scene)
    cine = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "cine")
    for index in range(3):
        cine.SetDataNodeAtValue(scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode"), str(index))
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", "cine browser")
    browser.SetAndObserveMasterSequenceNodeID(cine.GetID())
    logic.UpdateProxyNodesFromSequences(browser)
    chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode")
    outputs = module.CineOutputs(None, None, None, None, chart, [], browser, {}, {})
    volumes = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    module.showCineOutputs(outputs, cine)
    assert shownIn.sequences.shown == [browser] and shownIn.charts == [chart]
    assert shownIn.layers == [{"background": browser.GetProxyNode(cine), "fit": True}]
    assert scene.GetNumberOfNodesByClass("vtkMRMLSequenceBrowserNode") == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == volumes


def test_a_multivolume_is_shown_itself_beside_its_outputs_browser(module, shownIn):
    scene = slicer.mrmlScene
    withSequences(scene)
    cine = multivolume(scene)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode")
    outputs = module.CineOutputs(None, None, None, None, None, [], browser, {}, {})
    module.showCineOutputs(outputs, cine)
    assert shownIn.sequences.shown == [browser]
    assert shownIn.layers == [{"background": cine, "fit": True}]


def test_the_3d_view_is_centred_on_the_bullseyes(module, shownIn, monkeypatch):
    """With bullseye models among the outputs, the first 3D view resets its focal point (qMRMLThreeDView's
    resetFocalPoint) to show them; without, the 3D view is left alone."""
    reset = []
    view = types.SimpleNamespace(resetFocalPoint=lambda: reset.append(True))
    widget = types.SimpleNamespace(threeDView=lambda: view)
    layout = types.SimpleNamespace(threeDViewCount=1, threeDWidget=lambda i: widget)
    monkeypatch.setattr(slicer.app, "layoutManager", lambda: layout, raising=False)
    scene = slicer.mrmlScene
    withSequences(scene)
    cine = multivolume(scene)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode")
    module.showCineOutputs(module.CineOutputs(None, None, None, None, None, [], browser, {}, {}), cine)
    assert reset == []
    model = scene.AddNewNodeByClass("vtkMRMLModelNode")
    module.showCineOutputs(module.CineOutputs(None, None, None, None, None, [], browser, {}, {}, None, [model]), cine)
    assert reset == [True]


def test_fresh_parameter_node_tracks_against_frame_1(module):
    parameters = module.FSDiffRegLogic().getParameterNode()
    assert parameters.referenceFrame == 1
    with pytest.raises(ValueError):
        parameters.referenceFrame = 0  # frames are counted from 1


def answerDevices(widget, devices):
    FakeDeviceQuery.answer = {"torch": "2.5.0", "devices": devices, "error": None}
    while widget._deviceQuery is not None:
        widget.onDeviceQueryPoll()


def test_saved_cuda_choice_falls_back_to_auto_without_cuda(module, widget, caplog):
    parameters = widget.logic.getParameterNode()
    parameters.device = "CUDA"  # as loaded from a scene saved on a CUDA machine
    assert widget.ui.deviceComboBox.currentText == "CUDA"  # not known yet: kept
    with caplog.at_level(logging.INFO):
        answerDevices(widget, ["cpu"])
    assert parameters.device == "Auto" and widget.ui.deviceComboBox.currentText == "Auto"
    assert widget.ui.deviceComboBox.items == ["Auto", "CPU"]
    assert "CUDA is not available" in caplog.text
    parameters.device = "CUDA"  # a scene loaded later (read back afresh: the writer's cache keeps its own value)
    assert widget.logic.getParameterNode().device == "Auto" and widget.ui.deviceComboBox.currentText == "Auto"


def test_cuda_is_offered_where_torch_lists_it(module, widget):
    parameters = widget.logic.getParameterNode()
    parameters.device = "CUDA"
    answerDevices(widget, ["cpu", "cuda"])
    assert parameters.device == "CUDA" and widget.ui.deviceComboBox.items == ["Auto", "CPU", "CUDA"]


def test_no_device_query_without_torch(module, monkeypatch):
    monkeypatch.setattr(module, "installedVersion", lambda name: None)
    monkeypatch.setattr(module, "DeviceQuery", None)  # would fail if called
    widget = module.FSDiffRegWidget(standins.ModuleParent())
    widget._parameterNode = None
    widget.startDeviceQuery()
    assert widget._devices == ["cpu"]


def test_module_description_and_sample_data(module, monkeypatch, tmp_path):
    parent = types.SimpleNamespace()
    module.FSDiffReg(parent)
    assert all(" (" in name and name.endswith(")") for name in parent.contributors)
    assert 'href="https://github.com/FSDiffReg/SlicerFSDiffReg#readme"' in parent.helpText
    assert slicer.app.connected["startupCompleted()"] == [module.registerSampleData]

    registered = {}
    sampleData = types.ModuleType("SampleData")
    sampleData.SampleDataLogic = types.SimpleNamespace(registerCustomSampleDataSource=registered.update)
    monkeypatch.setitem(sys.modules, "SampleData", sampleData)
    module.registerSampleData()
    assert Path(registered["thumbnailFileName"]).is_file()
    sample = sample_pair()
    assert registered["fileNames"] == [sample[role].name for role in ("fixed", "moving", "moving_labels")] == [
        "acdc091_ED.nii.gz", "acdc091_ES.nii.gz", "acdc091_ES_labels.nii.gz"]
    # Slicer's file types (5.8.1 to 5.12.3: qSlicerSegmentationsReader reads a .nii.gz label image)
    assert registered["loadFileTypes"] == ["VolumeFile", "VolumeFile", "SegmentationFile"]
    for uri, fileName, checksum in zip(registered["uris"], registered["fileNames"], registered["checksums"]):
        assert uri.startswith("file:///") and Path(url2pathname(urlsplit(uri).path)) == SAMPLE / fileName
        # as SampleDataLogic.downloadFile does (5.8.1 to 5.12.3): urlretrieve into the cache, then the checksum
        copy = tmp_path / fileName
        urlretrieve(uri, copy)
        assert checksum == "SHA256:" + hashlib.sha256(copy.read_bytes()).hexdigest()


def standinReport(python: str, release: str) -> dict:
    """What loading the module file in a fresh ``python`` imports, and the serializer of each field."""
    done = subprocess.run([python, str(Path(standins.__file__)), release], capture_output=True, text=True,
                          cwd=standins.ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_loading_the_module_imports_neither_torch_nor_simpleitk():
    imported = {name.split(".")[0] for name in standinReport(sys.executable, "5.12.3")["imported"]}
    assert not imported & {"torch", "SimpleITK"}, sorted(imported)


@pytest.mark.skipif(not PY39.is_file(), reason=f"Python 3.9 (Slicer 5.8's) not found at {PY39}")
def test_module_file_and_parameter_node_class_load_on_python_39():
    """Slicer 5.8 runs Python 3.9; slicer-core has no 3.9 build, so MRML classes are placeholders there."""
    on39 = standinReport(str(PY39), "5.8.1")
    here = standinReport(sys.executable, "5.8.1")
    assert on39["python"] == [3, 9]
    assert on39["serializers"] == here["serializers"] and on39["defaults"] == here["defaults"]
    assert on39["serializers"]["movingLabels"] == "UnionSerializer"



class FakePyTorchUtils:
    """PyTorchUtils' interface: ``PyTorchUtilsLogic().installTorch(askConfirmation=, torchVersionRequirement=)``."""

    def __init__(self, installs: bool = True):
        self.calls, self.cursors, self.installs = [], [], installs
        self.PyTorchUtilsLogic = lambda: self

    def installTorch(self, askConfirmation=False, forceComputationBackend=None, torchVersionRequirement=None):
        self.calls.append((askConfirmation, torchVersionRequirement))
        self.cursors.append(slicer.app.overrideCursors)
        return object() if self.installs else None


@pytest.fixture
def asked(monkeypatch):
    """Answers to slicer.util.confirmOkCancelDisplay (True by default) and what it was asked."""
    questions, cursors = [], []
    answer = types.SimpleNamespace(ok=True, questions=questions, cursors=cursors)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *args, **kwargs: (
        questions.append(text), cursors.append(slicer.app.overrideCursors))[0] or answer.ok)
    return answer


@pytest.mark.parametrize("module", ["5.12.3"], indirect=True)
@pytest.mark.parametrize(("status", "accept", "calls"), [
    ("ok", True, []), ("missing", True, [(False, ">=2.3")]), ("missing", False, []), ("old", True, [(False, ">=2.3")]),
    ("old", False, []),
])
def test_torch_is_installed_or_updated_through_pytorchutils(module, monkeypatch, asked, status, accept, calls):
    utils = FakePyTorchUtils()
    monkeypatch.setitem(sys.modules, "PyTorchUtils", utils)
    monkeypatch.setattr(module, "installedTorchStatus", lambda: status)
    monkeypatch.setattr(module, "installedVersion", {"numpy": "2.0.2", "torch": "2.2.0"}.get)
    asked.ok = accept
    if accept:
        module.ensureTorch()
    else:
        with pytest.raises(RuntimeError, match=">=2.3"):
            module.ensureTorch()
    assert utils.calls == calls
    assert bool(asked.questions) == (status != "ok")
    assert all(("2.2.0" in question) == (status == "old") for question in asked.questions)
    assert asked.cursors == [0] * len(asked.questions) and utils.cursors == [1] * len(calls)  # asked, then waited


class FakeWorker:
    """process.Worker's interface: records whether it was stopped."""

    def __init__(self, python):
        self.stopped = False

    def stop(self):
        self.stopped = True


@pytest.mark.parametrize("module", ["5.12.3"], indirect=True)
@pytest.mark.parametrize(("status", "packages"), [("ok", ()), ("missing", ()), ("old", ()),
                                                  ("ok", ("surely-not-an-installed-package>=1",)),
                                                  ("old", ("surely-not-an-installed-package>=1",))])
def test_the_worker_is_stopped_before_any_install(module, monkeypatch, asked, tmp_path, status, packages):
    """On Windows the idle worker holds torch's DLLs (and the packages' files) open: an install beside it
    fails half way. Nothing to install: the worker stays."""
    monkeypatch.setattr(module, "Worker", FakeWorker)
    monkeypatch.setattr(module, "pythonSlicerExecutable", lambda: sys.executable)
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("".join(line + "\n" for line in packages))
    monkeypatch.setattr(module, "REQUIREMENTS", requirements)
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # Slicer 5.8 and 5.10: pip_install
    monkeypatch.setattr(module, "installedTorchStatus", lambda: status)
    monkeypatch.setattr(module, "installedVersion", {"numpy": "2.0.2", "torch": "2.2.0"}.get)
    logic = module.FSDiffRegLogic()
    worker = logic.worker()
    stoppedAtInstall = []
    utils = FakePyTorchUtils()
    utils.installTorch = lambda **kwargs: stoppedAtInstall.append(worker.stopped) or object()
    monkeypatch.setitem(sys.modules, "PyTorchUtils", utils)
    monkeypatch.setattr(slicer.util, "pip_install", lambda requirements: stoppedAtInstall.append(worker.stopped))
    logic.ensureDependencies()
    installs = (status != "ok") + bool(packages)
    assert stoppedAtInstall == [True] * installs and worker.stopped == bool(installs)
    assert (logic.worker() is worker) == (not installs)


@pytest.mark.parametrize("module", ["5.12.3"], indirect=True)
def test_install_asks_before_the_wait_cursor_and_the_devices_are_asked_again(module, quietPanel, monkeypatch,
                                                                             tmp_path):
    """An update of torch (too old for NumPy 2) from Register: the question comes without a wait cursor,
    the job starts under one, and the new torch's devices are asked for (CUDA appears without a restart)."""
    widget = quietPanel
    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", tryWithErrorDisplay)  # Slicer's own: the wait cursor
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("")
    monkeypatch.setattr(module, "REQUIREMENTS", requirements)
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)
    torch = {"status": "old"}
    monkeypatch.setattr(module, "installedTorchStatus", lambda: torch["status"])
    monkeypatch.setattr(module, "installedVersion", {"numpy": "2.0.2", "torch": "2.2.0"}.get)
    utils = FakePyTorchUtils()
    monkeypatch.setitem(sys.modules, "PyTorchUtils", utils)
    answerDevices(widget, ["cpu"])  # the old torch: no CUDA
    assert widget.ui.deviceComboBox.items == ["Auto", "CPU"]
    cursors = {"asked": [], "started": []}
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay",
                        lambda text, *args, **kwargs: cursors["asked"].append(slicer.app.overrideCursors) or True)
    job = fakeTrackingJob(module)
    monkeypatch.setattr(widget.logic, "checkRegistration", lambda parameters: None)
    monkeypatch.setattr(widget.logic, "startRegistration",
                        lambda parameters: cursors["started"].append(slicer.app.overrideCursors) or job)
    widget.onRegisterButton()
    assert utils.calls == [(False, ">=2.3")] and widget._job is job
    assert cursors == {"asked": [0], "started": [1]} and slicer.app.overrideCursors == 0
    torch["status"] = "ok"
    assert widget._deviceQuery is not None  # asked again, of the new torch
    answerDevices(widget, ["cpu", "cuda"])
    assert widget.ui.deviceComboBox.items == ["Auto", "CPU", "CUDA"]


def withoutTorch(module, monkeypatch) -> tuple[list[str], FakePyTorchUtils, list[str]]:
    """Slicer without torch, whose user declines installs: the errors shown, the stand-in PyTorchUtils and the
    questions asked."""
    errors: list[str] = []
    asked: list[str] = []

    @contextlib.contextmanager
    def shown(failure, waitCursor=False):
        try:
            yield
        except Exception as error:
            errors.append(str(error))

    monkeypatch.setattr(slicer.util, "tryWithErrorDisplay", shown)
    monkeypatch.setattr(module, "installedTorchStatus", lambda: "missing")
    utils = FakePyTorchUtils(installs=False)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", utils)
    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", lambda text, *args, **kwargs: asked.append(text))
    return errors, utils, asked


@pytest.mark.parametrize("module", ["5.12.3"], indirect=True)
def test_inputs_are_checked_before_any_install_is_offered(module, monkeypatch, quietPanel):
    """A user without torch who clicks Register or Track with inputs that cannot run is told what is wrong with
    them, and is not asked to install anything; a declined install starts nothing and is asked once."""
    widget = quietPanel
    errors, utils, asked = withoutTorch(module, monkeypatch)
    widget.onRegisterButton()
    widget.onTrackButton()
    assert [e.split(":")[0] for e in errors] == ["Select a fixed volume.", "Select a cine"] and utils.calls == []
    assert asked == [] and widget._job is None
    errors.clear()
    monkeypatch.setattr(widget.logic, "checkRegistration", lambda parameters: None)
    started = []
    monkeypatch.setattr(widget.logic, "startRegistration", started.append)
    widget.onRegisterButton()  # the question declined
    assert len(asked) == 1 and utils.calls == [] and started == [] and widget._job is None
    assert len(errors) == 1 and errors[0].startswith("FSDiffReg needs PyTorch")


def test_an_idle_worker_ends_after_the_idle_time(module, quietPanel, monkeypatch, tmp_path):
    """The worker the device query started (torch imported) stays for the next job, not for ever."""
    widget = quietPanel
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("")
    monkeypatch.setattr(module, "REQUIREMENTS", requirements)
    monkeypatch.setattr(module, "installedTorchStatus", lambda: "ok")
    answerDevices(widget, ["cpu"])
    timer = widget._idleTimer
    assert timer.active and timer.singleShot and timer.interval == module.IDLE_STOP_MSEC
    worker = widget.logic.worker()
    worker.run(["devices"])
    pid = worker.pid
    job = fakeTrackingJob(module)
    monkeypatch.setattr(widget.logic, "checkTracking", lambda parameters: None)
    monkeypatch.setattr(widget.logic, "startTracking", lambda parameters: job)
    widget.onTrackButton()
    assert not timer.active  # no idle time while a job runs
    timer.timeout.emit()  # a timeout already queued: a busy worker stays
    assert widget.logic.worker() is worker and process_exists(pid)
    widget.onTrackButton()  # cancelled: idle again
    assert timer.active
    timer.timeout.emit()
    assert worker.pid is None and not process_exists(pid)


def test_closing_the_module_ends_its_worker(widget):
    worker = widget.logic.worker()
    worker.run(["devices"])
    pid = worker.pid
    widget.cleanup()
    assert worker.pid is None and not process_exists(pid)


@pytest.mark.parametrize("module", ["5.12.3"], indirect=True)
def test_torch_not_installed_or_no_pytorch_extension_is_a_clear_error(module, monkeypatch, asked):
    monkeypatch.setattr(module, "installedTorchStatus", lambda: "missing")
    monkeypatch.setitem(sys.modules, "PyTorchUtils", FakePyTorchUtils(installs=False))
    with pytest.raises(RuntimeError, match="not installed"):
        module.ensureTorch()
    monkeypatch.setitem(sys.modules, "PyTorchUtils", None)  # the PyTorch extension is missing
    with pytest.raises(RuntimeError, match="PyTorch extension"):
        module.ensureTorch()


@pytest.mark.parametrize("module", ["5.12.3"], indirect=True)
def test_slicer_pip_ensure_is_used_where_it_exists(module, monkeypatch, tmp_path):
    calls = []
    packaging = types.ModuleType("slicer.packaging")
    packaging.load_requirements = lambda path: ["loaded from " + Path(path).name]
    packaging.pip_ensure = lambda requirements, **kwargs: calls.append((requirements, kwargs))
    monkeypatch.setitem(sys.modules, "slicer.packaging", packaging)
    module.ensurePythonPackages(module.REQUIREMENTS)
    assert calls == [(["loaded from requirements.txt"], {"requester": "FSDiffReg"})]


@pytest.mark.parametrize("module", ["5.12.3"], indirect=True)
def test_before_slicer_512_missing_packages_are_pip_installed_after_asking(module, monkeypatch, asked, tmp_path):
    monkeypatch.setitem(sys.modules, "slicer.packaging", None)  # Slicer 5.8 and 5.10
    installed = []
    monkeypatch.setattr(slicer.util, "pip_install",
                        lambda missing: installed.append((missing, slicer.app.overrideCursors)))
    module.ensurePythonPackages(module.REQUIREMENTS)
    assert (asked.questions, installed) == ([], [])
    path = tmp_path / "requirements.txt"
    path.write_text("numpy>=1.0\nsurely-not-an-installed-package>=1\n")
    module.ensurePythonPackages(path)
    assert installed == [(["surely-not-an-installed-package>=1"], 1)] and "surely-not" in asked.questions[0]
    assert asked.cursors == [0]  # asked, then installed under the wait cursor
    asked.ok = False
    with pytest.raises(RuntimeError, match="surely-not"):
        module.ensurePythonPackages(path)
    assert len(installed) == 1


def loadVolumeFile(path, nodeClass: str = "vtkMRMLScalarVolumeNode"):
    """A volume node read into slicer.mrmlScene by Slicer's volume storage node (loadVolume needs the app)."""
    node = slicer.mrmlScene.AddNewNodeByClass(nodeClass)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node), path
    return node


def sampleNodes(selfTest):
    """FSDiffRegTest.loadSample's nodes, read without the application."""
    sample = sample_pair()
    return (loadVolumeFile(sample["fixed"]), loadVolumeFile(sample["moving"]),
            loadVolumeFile(sample["moving_labels"], "vtkMRMLLabelMapVolumeNode"))


@pytest.mark.parametrize("module", ["5.12.3"], indirect=True)
@pytest.mark.parametrize("status", ["missing", "old"])
def test_self_test_loaded_by_name_skips_registration_without_torch(module, monkeypatch, status):
    """As the extension factory runs it: slicer.testing.runUnitTest loads the module's test methods by name
    (unittest's loader) and never calls runTest; without a usable torch the registration test is skipped,
    and nothing asks PyTorchUtils to install torch."""
    utils = FakePyTorchUtils(installs=False)
    monkeypatch.setitem(sys.modules, "PyTorchUtils", utils)
    monkeypatch.setitem(sys.modules, "FSDiffReg", module)
    monkeypatch.setattr(module, "installedTorchStatus", lambda: status)
    monkeypatch.setattr(module.FSDiffRegTest, "loadSample", sampleNodes)
    suite = unittest.TestLoader().loadTestsFromName("FSDiffReg")  # runUnitTest([...], "FSDiffReg") at 5.8.1-5.12.3
    tests = {test.id(): test for group in suite for test in group}
    assert "FSDiffReg.FSDiffRegTest.runTest" not in tests
    registration = tests["FSDiffReg.FSDiffRegTest.test_RegisterSamplePair"]
    result = unittest.TestResult()
    registration.run(result)
    assert (result.errors, result.failures) == ([], [])
    assert [(test.id(), "PyTorch" in reason) for test, reason in result.skipped] == [(registration.id(), True)]
    assert utils.calls == []


@pytest.mark.parametrize("module", ["5.12.3"], indirect=True)
@pytest.mark.parametrize("status", ["ok", "missing", "old"])
def test_self_test_registers_only_where_torch_is_installed(module, monkeypatch, status):
    """Reload and Test (runTest) runs every test; the registration says why it is skipped."""

    class Reached(Exception):
        """The registration test went past its guard."""

    def reached(selfTest):
        raise Reached

    monkeypatch.setattr(module, "installedTorchStatus", lambda: status)
    monkeypatch.setattr(module.FSDiffRegTest, "loadSample", reached)
    selfTest, ran, shown = module.FSDiffRegTest(), [], []
    selfTest.delayDisplay = lambda message, msec=None: shown.append(message)
    for name in ("test_PanelAndParameterNode", "test_BadInputsChangeNothing"):
        setattr(selfTest, name, lambda name=name: ran.append(name))
    if status == "ok":
        with pytest.raises(Reached):
            selfTest.runTest()
    else:
        selfTest.runTest()
        assert "PyTorch" in shown[-1] and "skipped" in shown[-1]
    assert ran == ["test_PanelAndParameterNode", "test_BadInputsChangeNothing"]


def fakeSegmentationJob(module, segmentation=None):
    """A SegmentationJob without a process: 52 %."""
    return fakeJob(module.SegmentationJob, "fsdiffreg: segmenting 5/10 slices", 52, segmentation)


def test_segment_turns_into_cancel_and_blocks_register_and_track_until_cancelled(module, quietPanel, monkeypatch):
    widget, ui = quietPanel, quietPanel.ui
    job = fakeSegmentationJob(module)
    monkeypatch.setattr(widget.logic, "checkSegmentation", lambda parameters: None)
    monkeypatch.setattr(widget.logic, "startSegmentation", lambda parameters: job)
    assert ui.segmentButton.text == "Segment the reference frame" and ui.segmentButton.enabled
    widget.onSegmentButton()
    assert (ui.segmentButton.text, ui.trackButton.text, ui.registerButton.text) == ("Cancel", "Track", "Register")
    assert ui.segmentButton.enabled and not ui.registerButton.enabled and not ui.trackButton.enabled
    assert not any(w.enabled for w in (ui.cineInputsWidget, ui.inputsCollapsibleButton, ui.advancedCollapsibleButton))
    widget.onPoll()
    assert ui.progressBar.value == 52 and widget.log == ["fsdiffreg: segmenting 5/10 slices"]
    widget.onSegmentButton()
    assert job.cancelled and widget._job is None and widget.log[-1] == "Cancelled."
    assert (ui.segmentButton.text, ui.trackButton.text, ui.registerButton.text) == (
        "Segment the reference frame", "Track", "Register")
    assert all(w.enabled for w in (ui.segmentButton, ui.trackButton, ui.registerButton, ui.cineInputsWidget))


def test_track_and_register_disable_the_segment_button(module, quietPanel, monkeypatch):
    widget, ui = quietPanel, quietPanel.ui
    monkeypatch.setattr(widget.logic, "checkTracking", lambda parameters: None)
    monkeypatch.setattr(widget.logic, "startTracking", lambda parameters: fakeTrackingJob(module))
    widget.onTrackButton()
    assert ui.segmentButton.text == "Segment the reference frame" and not ui.segmentButton.enabled
    widget.onTrackButton()
    assert ui.segmentButton.enabled


def test_finished_segmentation_becomes_the_cines_labels_and_can_be_the_moving_labels(module, quietPanel,
                                                                                    monkeypatch):
    widget, scene = quietPanel, slicer.mrmlScene
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "cine frame 1 segmentation")
    job = fakeSegmentationJob(module, segmentation)
    monkeypatch.setattr(widget.logic, "checkSegmentation", lambda parameters: None)
    monkeypatch.setattr(widget.logic, "startSegmentation", lambda parameters: job)
    widget.onSegmentButton()
    job.done = True
    widget.onPoll()
    parameters = widget.logic.getParameterNode()
    assert parameters.cineLabels is segmentation and widget.ui.cineLabelsSelector.currentNode() is segmentation
    assert widget.ui.summaryLabel.text == ("'cine frame 1 segmentation' made: check or edit its segments in Segment "
                                           "Editor, then Track.")
    assert widget.ui.progressBar.value == 100 and widget._job is None
    assert widget.ui.segmentButton.text == "Segment the reference frame"
    assert "vtkMRMLSegmentationNode" in widget.ui.movingLabelsSelector.nodeTypes  # the Register panel's selector
    parameters.movingLabels = segmentation
    assert widget.ui.movingLabelsSelector.currentNode() is segmentation


@pytest.mark.parametrize("module", ["5.12.3"], indirect=True)
def test_segment_inputs_are_checked_before_any_install_is_offered(module, monkeypatch, quietPanel):
    widget = quietPanel
    errors, utils, asked = withoutTorch(module, monkeypatch)
    widget.onSegmentButton()
    assert len(errors) == 1 and errors[0].startswith("Select a cine") and "\n" not in errors[0]
    assert asked == [] and utils.calls == [] and widget._job is None
