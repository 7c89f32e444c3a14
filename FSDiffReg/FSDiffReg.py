"""FSDiffReg: diffusion-guided deformable registration of cardiac MRI, as a 3D Slicer module.

Thin glue: the GUI and the Slicer logic live here; node conversions are in FSDiffRegMRML
(Qt-free, tested with slicer-core) and the registration itself in FSDiffRegLib, run in a
separate Python process so the GUI never freezes.
"""

import importlib.util
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Union

import qt
import slicer
import vtk
from slicer import (
    vtkMRMLGridTransformNode,
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from FSDiffRegMRML.display import showDeformation
from FSDiffRegMRML.inputs import InputError, checkInputs
from FSDiffRegMRML.job import RegistrationJob
from FSDiffRegMRML.outputs import RegistrationOutputs, summary
from FSDiffRegMRML.process import RegisterOptions, bundledWeights, libraryRoot

DEVICES = ["Auto", "CPU", "CUDA"]
DEFORMATION_MODES = ["Grid", "Glyph", "Contour"]
TORCH_REQUIREMENT = ">=2.1"
#: What the registration process needs besides torch and Slicer's own SimpleITK.
PYTHON_REQUIREMENTS = ["numpy>=1.24"]
POLL_MSEC = 200


class FSDiffReg(ScriptedLoadableModule):
    """Module description shown in Slicer."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("FSDiffReg")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Registration")]
        self.parent.dependencies = []
        self.parent.contributors = ["FSDiffReg developers"]
        self.parent.helpText = _(
            "Deformable registration of cardiac MRI with a diffusion-guided network (FSDiffReg). "
            "Pick a fixed and a moving volume (e.g. end-diastole and end-systole) and click Register. "
            "Outputs are new nodes: a grid transform (put the moving volume under it to align it), "
            "the warped volume, the Jacobian determinant (white 1, blue shrinking, red growing, "
            "yellow folds) and, if given, the propagated labels. Needs the PyTorch extension.")
        self.parent.acknowledgementText = _(
            "Method: Y. Qin and X. Li, FSDiffReg: Feature-wise and Score-wise Diffusion-guided "
            "Unsupervised Deformable Image Registration for Cardiac Images, MICCAI 2023. "
            "Bundled weights and sample were trained on / taken from the ACDC data set "
            "(O. Bernard et al., IEEE TMI 37(11), 2018; CC BY-NC-SA 4.0).")


@parameterNodeWrapper
class FSDiffRegParameterNode:
    """Inputs, options and the last outputs of the module (saved with the scene).

    smoothness 0 means the refinement's default (18); refineSteps 0 means the network alone.
    """

    fixedVolume: vtkMRMLScalarVolumeNode
    movingVolume: vtkMRMLScalarVolumeNode
    movingLabels: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
    device: Annotated[str, Choice(DEVICES)] = "Auto"
    refineSteps: Annotated[int, WithinRange(0, 1000)] = RegisterOptions.refineSteps
    smoothness: Annotated[float, WithinRange(0.0, 1000.0)] = 0.0
    weightsFile: Path = bundledWeights()
    outputTransform: vtkMRMLGridTransformNode
    warpedVolume: vtkMRMLScalarVolumeNode
    jacobianVolume: vtkMRMLScalarVolumeNode
    warpedLabels: Union[vtkMRMLSegmentationNode, vtkMRMLLabelMapVolumeNode]
    showGrid: bool = False
    gridMode: Annotated[str, Choice(DEFORMATION_MODES)] = "Grid"


class FSDiffRegWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The GUI: Register turns into Cancel while the registration process runs."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._timer = None

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
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.registerButton.clicked.connect(self.onRegisterButton)
        self.setRunning(False)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.cancelRegistration()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.disconnectParameterNode()

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelRegistration()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def disconnectParameterNode(self) -> None:
        """Stop syncing GUI and parameter node (the GUI is synced again on enter)."""
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)

    def setParameterNode(self, parameterNode) -> None:
        self.disconnectParameterNode()
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterChanged)
            self.updateDeviceChoices()
            self.onParameterChanged()

    def updateDeviceChoices(self) -> None:
        """Offer CUDA only where PyTorch can use it (the connector lists every choice)."""
        if self.logic.cudaAvailable():
            return
        if self._parameterNode.device == "CUDA":
            self._parameterNode.device = "Auto"
        self.ui.deviceComboBox.removeItem(DEVICES.index("CUDA"))

    def onParameterChanged(self, caller=None, event=None) -> None:
        self.logic.updateDeformationDisplay(self._parameterNode)
        hasTransform = self._parameterNode.outputTransform is not None
        self.ui.showGridCheckBox.enabled = hasTransform
        self.ui.gridModeComboBox.enabled = hasTransform

    def onRegisterButton(self) -> None:
        if self._job is not None:
            self.cancelRegistration()
            return
        with slicer.util.tryWithErrorDisplay(_("Registration could not start."), waitCursor=True):
            self.ui.logText.clear()
            self.ui.summaryLabel.text = ""
            self._job = self.logic.startRegistration(self._parameterNode)
            self.setRunning(True)

    def onPoll(self) -> None:
        for line in self._job.poll():
            self.ui.logText.appendPlainText(line)
        self.ui.progressBar.value = self._job.progress
        if self._job.finished:
            self.onFinished()

    def onFinished(self) -> None:
        job, self._job = self._job, None
        self.setRunning(False)
        with slicer.util.tryWithErrorDisplay(_("Registration failed."), waitCursor=True):
            outputs = self.logic.finishRegistration(job, self._parameterNode)
            self.ui.progressBar.value = 100
            self.ui.summaryLabel.text = summary(outputs.metrics)
            slicer.util.setSliceViewerLayers(background=self._parameterNode.fixedVolume,
                                             foreground=outputs.warped, foregroundOpacity=0.5, fit=True)

    def cancelRegistration(self) -> None:
        """Stop a running registration; the scene stays as it was."""
        if self._job is None:
            return
        self._job.cancel()
        self._job = None
        self.setRunning(False)
        self.ui.logText.appendPlainText(_("Cancelled."))

    def setRunning(self, running: bool) -> None:
        self.ui.registerButton.text = _("Cancel") if running else _("Register")
        self.ui.inputsCollapsibleButton.enabled = not running
        self.ui.advancedCollapsibleButton.enabled = not running
        self.ui.progressBar.visible = running or self.ui.progressBar.value > 0
        if running:
            self.ui.progressBar.value = 0
            self._timer.start()
        else:
            self._timer.stop()


def pythonExecutable() -> str:
    """Slicer's own Python launcher for the registration process."""
    return shutil.which("PythonSlicer") or sys.executable


def ensurePythonPackages(requirements: list[str]) -> None:
    """Install what is missing (never torch or SimpleITK: those come from PyTorch and Slicer)."""
    try:
        from slicer.pydeps import pip_ensure
    except ImportError:  # Slicer < 5.11
        pip_ensure = None
    from packaging.requirements import Requirement

    wanted = [Requirement(requirement) for requirement in requirements]
    if pip_ensure is not None:
        pip_ensure(wanted, skip_packages=["torch", "SimpleITK"], requester="FSDiffReg")
        return
    missing = [str(r) for r in wanted if importlib.util.find_spec(r.name) is None]
    if not missing:
        return
    if not slicer.util.confirmOkCancelDisplay(
            _("FSDiffReg needs these Python packages: {packages}. Install them now?").format(
                packages=", ".join(missing))):
        raise RuntimeError(_("FSDiffReg cannot run without: {packages}").format(packages=", ".join(missing)))
    slicer.util.pip_install(" ".join(missing))


class FSDiffRegLogic(ScriptedLoadableModuleLogic):
    """Starts registrations and keeps the parameter node's outputs; usable without the GUI."""

    def getParameterNode(self) -> FSDiffRegParameterNode:
        return FSDiffRegParameterNode(super().getParameterNode())

    @staticmethod
    def options(parameters: FSDiffRegParameterNode) -> RegisterOptions:
        """The registration options chosen in the parameter node (an emptied weights field: bundled)."""
        weights = parameters.weightsFile if str(parameters.weightsFile) not in ("", ".") else bundledWeights()
        if not Path(weights).is_file():
            raise InputError(_("Weights file not found: {path}").format(path=weights))
        return RegisterOptions(device=parameters.device.lower(), weights=str(weights),
                               refineSteps=parameters.refineSteps, smoothness=parameters.smoothness or None)

    def ensureDependencies(self) -> None:
        """torch through the PyTorch extension, other packages through pip; asks before installing."""
        try:
            import PyTorchUtils
        except ModuleNotFoundError:
            raise RuntimeError(_("FSDiffReg needs the PyTorch extension. Install 'PyTorch' from the "
                                 "Extensions Manager, restart Slicer and try again.")) from None
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        if not torchLogic.torchInstalled():
            if torchLogic.installTorch(askConfirmation=True, torchVersionRequirement=TORCH_REQUIREMENT) is None:
                raise RuntimeError(_("FSDiffReg needs PyTorch, which was not installed."))
        ensurePythonPackages(PYTHON_REQUIREMENTS)

    def cudaAvailable(self) -> bool:
        """Whether the installed PyTorch can use CUDA (False while PyTorch is not installed)."""
        if importlib.util.find_spec("torch") is None:
            return False
        try:
            import torch

            return torch.cuda.is_available()
        except Exception as error:  # a broken PyTorch install must not break the module GUI
            logging.warning(f"FSDiffReg: cannot check CUDA: {error}")
            return False

    def startRegistration(self, parameters: FSDiffRegParameterNode) -> RegistrationJob:
        """Check the inputs, make sure torch is there, and start the registration process."""
        checkInputs(parameters.fixedVolume, parameters.movingVolume, parameters.movingLabels)
        options = self.options(parameters)
        self.ensureDependencies()
        return RegistrationJob(parameters.fixedVolume, parameters.movingVolume, parameters.movingLabels,
                               options, pythonExecutable())

    def finishRegistration(self, job: RegistrationJob, parameters: FSDiffRegParameterNode) -> RegistrationOutputs:
        """Load a finished job's outputs as new nodes and remember them in the parameter node."""
        outputs = job.outputs()
        parameters.outputTransform = outputs.transform
        parameters.warpedVolume = outputs.warped
        parameters.jacobianVolume = outputs.jacobian
        parameters.warpedLabels = outputs.warpedLabels
        logging.info(f"FSDiffReg: {summary(outputs.metrics)}")
        return outputs

    def register(self, fixed, moving, labels=None, options: RegisterOptions | None = None) -> RegistrationOutputs:
        """Register and wait (scripts, self-test), keeping the application responsive."""
        checkInputs(fixed, moving, labels)
        self.ensureDependencies()
        job = RegistrationJob(fixed, moving, labels, options, pythonExecutable())
        return job.wait(idle=lambda: (slicer.app.processEvents(), time.sleep(0.05)))

    def updateDeformationDisplay(self, parameters: FSDiffRegParameterNode) -> None:
        """Show or hide the output transform in the slice views, as chosen in the GUI."""
        if parameters.outputTransform is not None:
            showDeformation(parameters.outputTransform, parameters.showGrid, parameters.gridMode.lower(),
                            parameters.fixedVolume)


class FSDiffRegTest(ScriptedLoadableModuleTest):
    """Registers the bundled sample pair (ACDC patient 091, ES to ED) in a real Slicer."""

    def setUp(self) -> None:
        slicer.mrmlScene.Clear()

    def runTest(self) -> None:
        self.setUp()
        self.test_RegisterSamplePair()
        self.setUp()
        self.test_BadInputsChangeNothing()

    def loadSample(self):
        sample = libraryRoot() / "FSDiffRegLib" / "assets" / "sample"
        fixed = slicer.util.loadVolume(str(sample / "acdc091_ED.nii.gz"))
        moving = slicer.util.loadVolume(str(sample / "acdc091_ES.nii.gz"))
        labels = slicer.util.loadLabelVolume(str(sample / "acdc091_ES_labels.nii.gz"))
        return fixed, moving, labels

    def test_RegisterSamplePair(self) -> None:
        self.delayDisplay("Registering the sample pair")
        fixed, moving, labels = self.loadSample()
        before = slicer.util.arrayFromVolume(moving).copy()
        outputs = FSDiffRegLogic().register(fixed, moving, labels, RegisterOptions(device="cpu"))

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
