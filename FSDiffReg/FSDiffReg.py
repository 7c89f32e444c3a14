"""FSDiffReg: diffusion-guided deformable registration of cardiac MRI, as a 3D Slicer module.

Thin glue: the GUI and the Slicer logic live here; node conversions are in FSDiffRegMRML
(Qt-free, tested with slicer-core) and the registration itself in FSDiffRegLib, run in a
separate Python process so the GUI never freezes and never imports torch.

Runs in Slicer 5.8 (Python 3.9) to 5.12. Annotations are evaluated here on purpose (no
``from __future__ import annotations``): Slicer's parameterNodeWrapper reads the field types
with ``typing.get_type_hints``, which resolves string annotations through ``sys.modules``;
real types work however Slicer loads this file. So: ``Optional``/``Union``, never ``X | Y``.
"""

import logging
import time
import unittest
from pathlib import Path
from typing import Annotated, Optional, Union

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLGridTransformNode,
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLPlotChartNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLSequenceBrowserNode,
    vtkMRMLSequenceNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, SlicerParameterNamePropertyName, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from FSDiffRegMRML.cine_inputs import MULTIVOLUME_ATTRIBUTE, checkCine, checkCineFrame
from FSDiffRegMRML.cine_job import TrackingJob
from FSDiffRegMRML.cine_outputs import CineOutputs, cineSummary
from FSDiffRegMRML.dependencies import (
    installedTorchStatus,
    installedVersion,
    missingRequirements,
    readRequirements,
    torchRequirement,
)
from FSDiffRegMRML.display import showDeformation
from FSDiffRegMRML.inputs import InputError, checkInputs
from FSDiffRegMRML.job import RegistrationJob
from FSDiffRegMRML.process import DeviceQuery, RegisterOptions, Worker, pythonSlicerExecutable
from FSDiffRegMRML.registration_outputs import RegistrationOutputs, summary
from FSDiffRegMRML.segment_job import SegmentationJob, segmentationSummary

DEVICES = ["Auto", "CPU", "CUDA"]
DEFORMATION_MODES = ["Grid", "Glyph", "Contour"]
POLL_MSEC = 200
#: How long the worker (torch imported, maybe a CUDA context) outlives its last command: long enough for
#: the next run to skip importing torch again, short enough not to hold memory and files all session.
IDLE_STOP_MSEC = 10 * 60 * 1000
RESOURCES = Path(__file__).resolve().parent / "Resources"
#: Python packages the registration process needs beside torch, NumPy and SimpleITK.
REQUIREMENTS = RESOURCES / "requirements.txt"
DOCUMENTATION = "https://github.com/FSDiffReg/SlicerFSDiffReg#readme"
#: The bundled sample pair (ACDC patient 091) offered in Sample Data: its role in
#: ``FSDiffRegLib.resources.sample_pair()``, node name, SHA256 of the file, and Slicer's file type
#: (the moving labels arrive as a segmentation, ready to be carried by Register).
SAMPLE_FILES = (
    ("fixed", "acdc091_ED", "63ce6a74422112db6abc1d5a2e152b65da799d7e7a6126917d4dc912b987a0f3", "VolumeFile"),
    ("moving", "acdc091_ES", "47b2f5c068614f9e4c351c56b60e80abbf4589cc7b4a2b45f3ac86587a8166b0", "VolumeFile"),
    ("moving_labels", "acdc091_ES_labels", "a000bf1701d5a529cf9d58b6bf63bbb887131ad070ea8eb343b08ca3c01402e3",
     "SegmentationFile"),
)


class FSDiffReg(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FSDiffReg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["FSDiffReg developers (FSDiffReg project)"]
        self.parent.helpText = _(
            "Deformable registration of cardiac MRI with a diffusion-guided network (FSDiffReg). "
            "Pick a fixed and a moving volume (e.g. end-diastole and end-systole) and click Register. "
            "Outputs are new nodes: a grid transform (put the moving volume under it to align it), "
            "the warped volume, the Jacobian determinant (white 1, blue shrinking, red growing, "
            "yellow folds) and, if given, the propagated labels. In the Cine section, track a whole "
            "cardiac cycle: pick a cine (a volume sequence or a multivolume), the frame its labels belong to "
            "(ED) and the ED segmentation (or click Segment the reference frame to have it labelled, then check it in "
            "Segment Editor); Track gives a transform and the labels of every frame, browsed with "
            "the cine, and tables and curves of the volumes, ejection fraction and strain. Needs the PyTorch "
            "extension. "
            "Try it with the FSDiffReg sample pair of the Sample Data module. "
            'See the <a href="{url}">documentation</a>.').format(url=DOCUMENTATION)
        self.parent.acknowledgementText = _(
            "Method: Y. Qin and X. Li, FSDiffReg: Feature-wise and Score-wise Diffusion-guided "
            "Unsupervised Deformable Image Registration for Cardiac Images, MICCAI 2023. "
            "Bundled weights and sample were trained on / taken from the ACDC data set "
            "(O. Bernard et al., IEEE TMI 37(11), 2018; CC BY-NC-SA 4.0).")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData() -> None:
    """Offer the sample pair installed with the extension in the Sample Data module, by ``file://`` URIs:
    SampleData copies them into its cache (``urlretrieve``) and checks their SHA256, offline too."""
    import SampleData

    from FSDiffRegLib.resources import sample_pair

    paths = [sample_pair()[role] for role, _, _, _ in SAMPLE_FILES]
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="FSDiffReg",
        sampleName="FSDiffRegCardiacPair",
        thumbnailFileName=str(RESOURCES / "Icons" / "FSDiffReg.png"),
        uris=[path.as_uri() for path in paths],
        fileNames=[path.name for path in paths],
        nodeNames=[nodeName for _, nodeName, _, _ in SAMPLE_FILES],
        checksums=[f"SHA256:{sha256}" for _, _, sha256, _ in SAMPLE_FILES],
        loadFileTypes=[fileType for _, _, _, fileType in SAMPLE_FILES],
    )


@parameterNodeWrapper
class FSDiffRegParameterNode:
    """Inputs, options and the last outputs of the module (saved with the scene).

    smoothness 0 means the refinement's default (6); refineSteps 0 means the network alone; an
    empty weightsFile means the weights bundled with the extension (never an install path, so a
    saved scene works on any computer); it is a str, bound to its path field by the widget: a Path
    field (5.8 to 5.12) holds ``Path("")`` and shows it as ".". A Union of node types lists None:
    the wrapper writes every default into a fresh node, and a Union's default is None. The cine fields: a volume
    sequence, the frame (counted from 1) its labels belong to, those labels, and the last tracking's
    outputs; the options above apply to tracking too. The cine is a volume sequence or a multivolume
    (MultiVolumeImporter's vtkMRMLMultiVolumeNode, a scalar volume subclass that a module file cannot
    name: the selector shows only the scalar volumes with a ``MultiVolume.NumberOfFrames`` attribute).
    """

    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    movingLabels: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]
    device: Annotated[str, Choice(DEVICES)] = "Auto"
    refineSteps: Annotated[int, WithinRange(0, RegisterOptions.maxRefineSteps)] = RegisterOptions.refineSteps
    smoothness: Annotated[float, WithinRange(0.0, 1000.0)] = 0.0
    weightsFile: str = ""
    outputTransform: vtkMRMLGridTransformNode
    warpedVolume: vtkMRMLScalarVolumeNode
    jacobianVolume: vtkMRMLScalarVolumeNode
    warpedLabels: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]
    showGrid: bool = False
    gridMode: Annotated[str, Choice(DEFORMATION_MODES)] = "Grid"
    cineVolumes: Union[vtkMRMLSequenceNode, vtkMRMLScalarVolumeNode, None]
    referenceFrame: Annotated[int, WithinRange(1, 10000)] = 1
    cineLabels: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode, None]
    cineTransforms: vtkMRMLSequenceNode
    cineSegmentations: vtkMRMLSequenceNode
    cineTable: vtkMRMLTableNode
    cineFunctionTable: vtkMRMLTableNode
    cineChart: vtkMRMLPlotChartNode
    cineBrowser: vtkMRMLSequenceBrowserNode


class FSDiffRegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The GUI: Register (or Track) turns into Cancel while its process runs; one job at a time.

    The worker process (torch imported) stays while it serves: during a job or the device query, and
    ``IDLE_STOP_MSEC`` after, so that the next run starts at once; then it ends (``onIdle``), as it
    does when the module is closed. Installing torch or packages ends it before, and asks the new
    torch for its devices after.

    The GUI is connected once per parameter node (entering the module again reuses the
    connection), through ``connectParametersToGui``, which returns a tag in every Slicer
    release (5.8's ``connectGui`` does not), so the connection can always be undone.
    """

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = None
        self._deviceQuery = None
        self._deviceTimer = None
        self._devices = None  # the devices torch can use here; None until known
        self._deformationShown = None  # (transform, showGrid, gridMode) last applied to the transform's display

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/FSDiffReg.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = FSDiffRegLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_MSEC)
        self._timer.timeout.connect(self.onPoll)
        self._deviceTimer = qt.QTimer()
        self._deviceTimer.setInterval(POLL_MSEC)
        self._deviceTimer.timeout.connect(self.onDeviceQueryPoll)
        self._idleTimer = qt.QTimer()
        self._idleTimer.setSingleShot(True)
        self._idleTimer.setInterval(IDLE_STOP_MSEC)
        self._idleTimer.timeout.connect(self.onIdle)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.weightsPathLineEdit.currentPathChanged.connect(self.onWeightsPathChanged)
        self.ui.registerButton.clicked.connect(self.onRegisterButton)
        self.ui.trackButton.clicked.connect(self.onTrackButton)
        self.ui.segmentButton.clicked.connect(self.onSegmentButton)
        self.ui.cineVolumesSelector.addAttribute("vtkMRMLScalarVolumeNode", MULTIVOLUME_ATTRIBUTE)  # multivolumes
        self.setRunning(False)
        self.startDeviceQuery()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self._idleTimer.stop()
        self.cancelJob()
        if self._deviceQuery is not None:
            self._deviceQuery.cancel()
            self._deviceQuery = None
        self.logic.stopWorker()
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.removeObservers(self.onParameterChanged)

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelJob()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, parameterNode) -> None:
        """Show ``parameterNode`` (a wrapper; None: none): its GUI is connected once per MRML node."""
        if parameterNode is None or not self.isShown(parameterNode):
            self.disconnectParameterNode()
            self._parameterNode = parameterNode
            if parameterNode is None:
                return
            self._parameterNodeGuiTag = parameterNode.connectParametersToGui(self.parameterWidgets())
        if not self.hasObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged):
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
        self.onParameterChanged()

    def isShown(self, parameterNode) -> bool:
        """Whether ``parameterNode`` wraps the MRML node the GUI is connected to."""
        return self._parameterNode is not None and parameterNode.parameterNode is self._parameterNode.parameterNode

    def parameterWidgets(self) -> dict:
        """Parameter name -> widget, from the widgets' SlicerParameterName property (as connectGui finds them)."""
        widgets = vars(self.ui).values()
        return {w.property(SlicerParameterNamePropertyName): w for w in widgets
                if w.property(SlicerParameterNamePropertyName)}

    def disconnectParameterNode(self) -> None:
        """Stop syncing the GUI with the parameter node, and stop observing it."""
        self.removeObservers(self.onParameterChanged)
        if self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None

    def startDeviceQuery(self) -> None:
        """Ask the worker which devices torch can use (the GUI never imports torch); it then stays,
        torch imported, for the first Register (``IDLE_STOP_MSEC``). A query running is dropped."""
        if self._deviceQuery is not None:
            self._deviceQuery.cancel()
            self._deviceQuery = None
        if installedVersion("torch") is None:
            self.setDevices(["cpu"])
            return
        try:
            self._deviceQuery = DeviceQuery(self.logic.worker())
        except (OSError, RuntimeError) as error:
            logging.warning(f"FSDiffReg: cannot ask PyTorch for its devices: {error}")
            self.setDevices(["cpu"])
            return
        self._deviceTimer.start()

    def onDeviceQueryPoll(self) -> None:
        answer = self._deviceQuery.poll()
        if answer is None:
            return
        self._deviceTimer.stop()
        self._deviceQuery = None
        self._idleTimer.start()
        if answer["error"]:
            logging.warning(f"FSDiffReg: PyTorch cannot list its devices: {answer['error']}")
        self.setDevices(answer["devices"] or ["cpu"])

    def setDevices(self, devices: list) -> None:
        self._devices = devices
        if self._parameterNode is not None:
            self.updateDeviceChoices()

    def updateDeviceChoices(self) -> None:
        """Offer CUDA only where torch can use it (again, once a new torch can); a CUDA choice (from a saved
        scene) falls back to Auto."""
        if self._devices is None:
            return
        index = self.ui.deviceComboBox.findText("CUDA")
        if "cuda" in self._devices:
            if index < 0:
                self.ui.deviceComboBox.addItem("CUDA")
            return
        if self._parameterNode.device == "CUDA":
            logging.info("FSDiffReg: CUDA is not available on this computer; device set to Auto.")
            self._parameterNode.device = "Auto"
        if index >= 0:
            self.ui.deviceComboBox.removeItem(index)

    def onIdle(self) -> None:
        """End the worker when nothing has used it for ``IDLE_STOP_MSEC``."""
        if self._job is None and self._deviceQuery is None:
            self.logic.stopWorker()

    def onParameterChanged(self, caller=None, event=None) -> None:
        self.updateDeviceChoices()
        self.updateDeformationDisplay()
        weights = self.logic.weightsFile(self._parameterNode)
        if self.ui.weightsPathLineEdit.currentPath != weights:
            self.ui.weightsPathLineEdit.currentPath = weights
        hasTransform = self._parameterNode.outputTransform is not None
        self.ui.showGridCheckBox.enabled = hasTransform
        self.ui.gridModeComboBox.enabled = hasTransform

    def onWeightsPathChanged(self, path: str) -> None:
        if self._parameterNode is not None and self._parameterNode.weightsFile != path:
            self._parameterNode.weightsFile = path

    def updateDeformationDisplay(self) -> None:
        """Show the output transform as chosen, only when the transform or the choice changed: what the
        user set in the Transforms or Data module stays otherwise."""
        parameters = self._parameterNode
        shown = (parameters.outputTransform, parameters.showGrid, parameters.gridMode)
        if shown != self._deformationShown:
            self._deformationShown = shown
            self.logic.updateDeformationDisplay(parameters)

    def onRegisterButton(self) -> None:
        self.onJobButton(_("Registration could not start."), self.logic.checkRegistration,
                         self.logic.startRegistration)

    def onTrackButton(self) -> None:
        self.onJobButton(_("Tracking could not start."), self.logic.checkTracking, self.logic.startTracking)

    def onSegmentButton(self) -> None:
        self.onJobButton(_("Segmentation could not start."), self.logic.checkSegmentation,
                         self.logic.startSegmentation)

    def onJobButton(self, failure: str, check, start) -> None:
        """Start a job with ``start(parameters)``, or cancel the running one (its button reads Cancel).

        The inputs are checked first (``check(parameters)``), then what is missing is installed, after
        asking: nothing is offered for inputs that cannot run, the questions never come under the wait
        cursor, and a refused or failed install starts nothing.
        """
        if self._job is not None:
            self.cancelJob()
            return
        self.ui.logText.clear()
        self.ui.summaryLabel.text = ""
        ready = False
        with slicer.util.tryWithErrorDisplay(failure):
            check(self._parameterNode)
            self.ensureDependencies()
            ready = True
        if not ready:
            return
        with slicer.util.tryWithErrorDisplay(failure, waitCursor=True):
            self._job = start(self._parameterNode)
            self.setRunning(True)

    def ensureDependencies(self) -> None:
        """Install what is missing (the logic asks first); the worker, ended for it, is asked for the new
        torch's devices (CUDA appears without a restart)."""
        if not self.logic.dependenciesMissing():
            return
        try:
            self.logic.ensureDependencies()
        finally:
            self.startDeviceQuery()

    def onPoll(self) -> None:
        for line in self._job.poll():
            self.ui.logText.appendPlainText(line)
        self.ui.progressBar.value = self._job.progress
        if self._job.finished:
            self.onFinished()

    def onFinished(self) -> None:
        job, self._job = self._job, None
        self.setRunning(False)
        if isinstance(job, TrackingJob):
            self.onTrackingFinished(job)
            return
        if isinstance(job, SegmentationJob):
            self.onSegmentationFinished(job)
            return
        with slicer.util.tryWithErrorDisplay(_("Registration failed."), waitCursor=True):
            outputs = self.logic.finishRegistration(job, self._parameterNode)
            self.ui.progressBar.value = 100
            self.ui.summaryLabel.text = summary(outputs.metrics)
            slicer.util.setSliceViewerLayers(background=self._parameterNode.fixedVolume,
                                             foreground=outputs.warped, foregroundOpacity=0.5, fit=True)

    def onTrackingFinished(self, job: TrackingJob) -> None:
        with slicer.util.tryWithErrorDisplay(_("Tracking failed."), waitCursor=True):
            outputs = self.logic.finishTracking(job, self._parameterNode)
            self.ui.progressBar.value = 100
            self.ui.summaryLabel.text = cineSummary(outputs.function, outputs.metrics)
            showCineOutputs(outputs, job.cine)

    def onSegmentationFinished(self, job: SegmentationJob) -> None:
        with slicer.util.tryWithErrorDisplay(_("Segmentation failed."), waitCursor=True):
            segmentation = self.logic.finishSegmentation(job, self._parameterNode)
            self.ui.progressBar.value = 100
            self.ui.summaryLabel.text = segmentationSummary(segmentation)

    def cancelJob(self) -> None:
        """Stop a running registration, tracking or segmentation; the scene stays as it was."""
        if self._job is None:
            return
        self._job.cancel()
        self._job = None
        self.setRunning(False)
        self.ui.logText.appendPlainText(_("Cancelled."))

    def setRunning(self, running: bool) -> None:
        """The running job's button reads Cancel and the other job buttons are disabled, as are the inputs."""
        kind = next((k for k in (TrackingJob, SegmentationJob) if isinstance(self._job, k)), RegistrationJob)
        buttons = ((self.ui.registerButton, RegistrationJob, _("Register")),
                   (self.ui.trackButton, TrackingJob, _("Track")),
                   (self.ui.segmentButton, SegmentationJob, _("Segment the reference frame")))
        for button, jobKind, text in buttons:
            mine = running and kind is jobKind
            button.text = _("Cancel") if mine else text
            button.enabled = mine or not running
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.cineInputsWidget.enabled = not running
        self.ui.advancedCollapsibleButton.enabled = not running
        self.ui.progressBar.visible = running or self.ui.progressBar.value > 0
        if running:
            self.ui.progressBar.value = 0
            self._timer.start()
            self._idleTimer.stop()
        else:
            self._timer.stop()
            self._idleTimer.start()


def showCineOutputs(outputs: CineOutputs, cine) -> None:
    """Browse the cine with its outputs: their browser (the cine's own where it had one) in the sequence
    toolbar, the cine in the slice views (the tracked segmentation over it), the curves in a plot view, the
    3D view centred on what it shows (the strain bullseyes above the heart)."""
    slicer.modules.sequences.showSequenceBrowser(outputs.browser)
    background = outputs.browser.GetProxyNode(cine) if cine.IsA("vtkMRMLSequenceNode") else cine
    slicer.util.setSliceViewerLayers(background=background, fit=True)
    slicer.modules.plots.logic().ShowChartInLayout(outputs.chart)
    layout = slicer.app.layoutManager() if outputs.bullseyes else None
    if layout is not None and layout.threeDViewCount > 0:
        layout.threeDWidget(0).threeDView().resetFocalPoint()


def ensurePythonPackages(requirementsFile: Path) -> None:
    """Install what ``requirementsFile`` lists and is missing, after asking the user.

    Slicer 5.12 and later: ``slicer.packaging.pip_ensure`` (its own question and progress dialog);
    before: checked here, asked, and installed with ``slicer.util.pip_install`` under a wait cursor.
    torch, NumPy and SimpleITK are never listed there.
    """
    try:
        from slicer.packaging import load_requirements, pip_ensure
    except ImportError:  # Slicer 5.8 and 5.10
        pip_ensure = None
    if pip_ensure is not None:
        pip_ensure(load_requirements(requirementsFile), requester="FSDiffReg")
        return
    missing = missingRequirements(readRequirements(requirementsFile))
    if not missing:
        return
    packages = ", ".join(missing)
    if not slicer.util.confirmOkCancelDisplay(
            _("FSDiffReg needs these Python packages: {packages}. Install them now?").format(packages=packages)):
        raise RuntimeError(_("FSDiffReg cannot run without: {packages}").format(packages=packages))
    with slicer.util.WaitCursor():
        slicer.util.pip_install(missing)


def ensureTorch() -> None:
    """torch (new enough for FSDiffReg and for Slicer's NumPy) through the PyTorch extension, after asking;
    installed under a wait cursor (the question never is)."""
    status = installedTorchStatus()
    if status == "ok":
        return
    try:
        import PyTorchUtils
    except ModuleNotFoundError:
        raise RuntimeError(_("FSDiffReg needs the PyTorch extension. Install 'PyTorch' from the "
                             "Extensions Manager, restart Slicer and try again.")) from None
    requirement = torchRequirement(installedVersion("numpy"))
    if status == "old":
        question = _("FSDiffReg needs PyTorch {requirement} with this Slicer; PyTorch {version} is installed. "
                     "Update PyTorch now (this may take some minutes)?").format(
                        requirement=requirement, version=installedVersion("torch"))
    else:
        question = _("FSDiffReg needs PyTorch {requirement}, which is not installed. "
                     "Install PyTorch now (this may take some minutes)?").format(requirement=requirement)
    if not slicer.util.confirmOkCancelDisplay(question):
        raise RuntimeError(_("FSDiffReg needs PyTorch {requirement}.").format(requirement=requirement))
    with slicer.util.WaitCursor():
        installed = PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                                  torchVersionRequirement=requirement)
    if installed is None:
        raise RuntimeError(_("FSDiffReg needs PyTorch, which was not installed."))


class FSDiffRegLogic(ScriptedLoadableModuleLogic):
    """Starts registrations and keeps the parameter node's outputs; usable without the GUI.

    Its commands run in one worker process kept between runs (torch imported once); ``stopWorker()``
    ends it, and the next run starts a new one.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        self._worker = None

    def worker(self) -> Worker:
        """The worker process that runs the commands (started by its first command)."""
        if self._worker is None:
            self._worker = Worker(pythonSlicerExecutable())
        return self._worker

    def stopWorker(self) -> None:
        """End the worker process (a running command is cancelled)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def getParameterNode(self) -> FSDiffRegParameterNode:
        return FSDiffRegParameterNode(super().getParameterNode())

    @staticmethod
    def weightsFile(parameters: FSDiffRegParameterNode) -> str:
        """The chosen weights file; "" (the weights bundled with the registration process) for none,
        also where a scene saved with the former Path field holds "."."""
        return "" if parameters.weightsFile in ("", ".") else parameters.weightsFile

    @classmethod
    def options(cls, parameters: FSDiffRegParameterNode) -> RegisterOptions:
        """The registration options chosen in the parameter node."""
        weights = cls.weightsFile(parameters)
        if weights and not Path(weights).is_file():
            raise InputError(_("Weights file not found: {path}").format(path=weights))
        return RegisterOptions(device=parameters.device.lower(), weights=weights,
                               refineSteps=parameters.refineSteps, smoothness=parameters.smoothness or None)

    @staticmethod
    def dependenciesMissing() -> bool:
        """Whether torch is missing or too old, or a package of the requirements file is missing."""
        return installedTorchStatus() != "ok" or bool(missingRequirements(readRequirements(REQUIREMENTS)))

    def ensureDependencies(self) -> None:
        """torch through the PyTorch extension, other packages through pip; asks before installing.

        The worker ends first: on Windows it holds torch's DLLs (and the packages' files) open, and an
        install beside it fails half way. (PyTorchUtils' installTorch then imports the new torch into
        Slicer's own process; the worker still runs every command.)
        """
        if not self.dependenciesMissing():
            return
        self.stopWorker()
        ensureTorch()
        ensurePythonPackages(REQUIREMENTS)

    def checkRegistration(self, parameters: FSDiffRegParameterNode) -> None:
        """InputError naming the first problem with the registration's inputs and options."""
        checkInputs(parameters.fixedVolume, parameters.movingVolume, parameters.movingLabels)
        self.options(parameters)

    def startRegistration(self, parameters: FSDiffRegParameterNode) -> RegistrationJob:
        """Check the inputs, make sure torch is there, and start the registration process."""
        self.checkRegistration(parameters)
        self.ensureDependencies()
        return RegistrationJob(parameters.fixedVolume, parameters.movingVolume, parameters.movingLabels,
                               self.options(parameters), self.worker())

    def finishRegistration(self, job: RegistrationJob, parameters: FSDiffRegParameterNode) -> RegistrationOutputs:
        """Load a finished job's outputs as new nodes and remember them in the parameter node."""
        outputs = job.outputs()
        parameters.outputTransform = outputs.transform
        parameters.warpedVolume = outputs.warped
        parameters.jacobianVolume = outputs.jacobian
        parameters.warpedLabels = outputs.warpedLabels
        logging.info(f"FSDiffReg: {summary(outputs.metrics)}")
        return outputs

    def checkTracking(self, parameters: FSDiffRegParameterNode) -> None:
        """InputError naming the first problem with the cine, its labels and the options."""
        checkCine(parameters.cineVolumes, parameters.referenceFrame, parameters.cineLabels)
        self.options(parameters)

    def startTracking(self, parameters: FSDiffRegParameterNode) -> TrackingJob:
        """Check the cine and its labels, make sure torch is there, and start the tracking process."""
        self.checkTracking(parameters)
        self.ensureDependencies()
        return TrackingJob(parameters.cineVolumes, parameters.referenceFrame, parameters.cineLabels,
                           slicer.modules.sequences.logic(), self.options(parameters), self.worker())

    def finishTracking(self, job: TrackingJob, parameters: FSDiffRegParameterNode) -> CineOutputs:
        """Load a finished tracking's outputs as new nodes and remember them in the parameter node."""
        outputs = job.outputs()
        parameters.cineTransforms = outputs.transforms
        parameters.cineSegmentations = outputs.segmentations
        parameters.cineTable = outputs.table
        parameters.cineFunctionTable = outputs.functionTable
        parameters.cineChart = outputs.chart
        parameters.cineBrowser = outputs.browser
        logging.info(f"FSDiffReg: {cineSummary(outputs.function, outputs.metrics)}")
        return outputs

    def checkSegmentation(self, parameters: FSDiffRegParameterNode) -> None:
        """InputError naming the first problem with the cine, its reference frame and the options."""
        checkCineFrame(parameters.cineVolumes, parameters.referenceFrame)
        self.options(parameters)

    def startSegmentation(self, parameters: FSDiffRegParameterNode, weights: str = "") -> SegmentationJob:
        """Check the cine, make sure torch is there, and start segmenting its reference frame (``weights``: the
        segmentation weights, "" the bundled ones)."""
        self.checkSegmentation(parameters)
        self.ensureDependencies()
        return SegmentationJob(parameters.cineVolumes, parameters.referenceFrame, self.options(parameters),
                               self.worker(), weights)

    def finishSegmentation(self, job: SegmentationJob, parameters: FSDiffRegParameterNode):
        """Load a finished segmentation as a new node and make it the labels to track."""
        segmentation = job.outputs()
        parameters.cineLabels = segmentation
        logging.info(f"FSDiffReg: {segmentationSummary(segmentation)}")
        return segmentation

    def register(self, fixed, moving, labels=None, options: Optional[RegisterOptions] = None) -> RegistrationOutputs:
        """Register and wait (scripts, self-test), keeping the application responsive."""
        checkInputs(fixed, moving, labels)
        self.ensureDependencies()
        job = RegistrationJob(fixed, moving, labels, options, self.worker())
        return job.wait(idle=lambda: (slicer.app.processEvents(), time.sleep(0.05)))

    def updateDeformationDisplay(self, parameters: FSDiffRegParameterNode) -> None:
        """Show or hide the output transform in the slice views, as chosen in the GUI."""
        if parameters.outputTransform is not None:
            showDeformation(parameters.outputTransform, parameters.showGrid, parameters.gridMode.lower(),
                            parameters.fixedVolume)


class FSDiffRegTest(ScriptedLoadableModuleTest):
    """The panel, the parameter node and the input checks; a real registration of the bundled
    sample pair (ACDC patient 091, ES to ED) only where PyTorch is installed already: the
    self-test never downloads it (build machines).

    Each test that needs torch skips itself (``skipIfNoTorch``): the extension factory runs the
    tests with ``slicer.testing.runUnitTest``, which loads them by name and never calls ``runTest``.
    """

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        for test in (self.test_PanelAndParameterNode, self.test_BadInputsChangeNothing, self.test_RegisterSamplePair):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as reason:
                self.delayDisplay(f"{test.__name__} skipped: {reason}")

    def skipIfNoTorch(self) -> None:
        """Skip the calling test where no usable torch is installed (it would be installed otherwise)."""
        status = installedTorchStatus()
        if status != "ok":
            state = "not installed" if status == "missing" else "too old"
            self.skipTest(f"PyTorch is {state} here (the self-test never installs it)")

    def loadSample(self):
        from FSDiffRegLib.resources import sample_pair

        sample = sample_pair()
        fixed = slicer.util.loadVolume(str(sample["fixed"]))
        moving = slicer.util.loadVolume(str(sample["moving"]))
        labels = slicer.util.loadLabelVolume(str(sample["moving_labels"]))
        return fixed, moving, labels

    def test_PanelAndParameterNode(self) -> None:
        slicer.util.selectModule("FSDiffReg")
        widget = slicer.modules.FSDiffRegWidget
        parameters = widget.logic.getParameterNode()
        self.assertEqual(parameters.device, "Auto")
        self.assertEqual(parameters.weightsFile, "")
        fixed, moving, labels = self.loadSample()
        parameters.fixedVolume, parameters.movingVolume, parameters.movingLabels = fixed, moving, labels
        self.assertIs(widget.ui.fixedVolumeSelector.currentNode(), fixed)
        self.assertIs(widget.ui.movingVolumeSelector.currentNode(), moving)
        self.assertIs(widget.ui.movingLabelsSelector.currentNode(), labels)
        parameters.movingLabels = None
        self.assertIsNone(widget.ui.movingLabelsSelector.currentNode())
        self.delayDisplay("Panel and parameter node in sync")

    def test_RegisterSamplePair(self) -> None:
        self.skipIfNoTorch()
        self.delayDisplay("Registering the sample pair")
        fixed, moving, labels = self.loadSample()
        before = slicer.util.arrayFromVolume(moving).copy()
        logic = FSDiffRegLogic()
        try:
            outputs = logic.register(fixed, moving, labels, RegisterOptions(device="cpu"))
        finally:
            logic.stopWorker()

        self.assertTrue(outputs.transform.IsA("vtkMRMLGridTransformNode"))
        fixedMatrix, warpedMatrix = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        fixed.GetIJKToRASMatrix(fixedMatrix)
        for volume in (outputs.warped, outputs.jacobian, outputs.warpedLabels):
            self.assertEqual(volume.GetImageData().GetDimensions(), fixed.GetImageData().GetDimensions())
            volume.GetIJKToRASMatrix(warpedMatrix)
            self.assertTrue(all(fixedMatrix.GetElement(r, c) == warpedMatrix.GetElement(r, c)
                                for r in range(4) for c in range(4)))
        self.assertTrue((slicer.util.arrayFromVolume(moving) == before).all())
        metrics = outputs.metrics
        self.assertLess(metrics["folding_percent"], 1.0)
        self.assertGreater(metrics["ncc_after"], metrics["ncc_before"])
        self.assertAlmostEqual(float(slicer.util.arrayFromVolume(outputs.jacobian).mean()), 1.0, delta=0.2)
        self.delayDisplay(summary(metrics))

    def test_BadInputsChangeNothing(self) -> None:
        fixed, moving, labels = self.loadSample()
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        for inputs in ((fixed, fixed, None), (None, moving, None), (fixed, moving, fixed)):
            with self.assertRaises(InputError):
                FSDiffRegLogic().register(*inputs)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.delayDisplay("Bad inputs refused")
