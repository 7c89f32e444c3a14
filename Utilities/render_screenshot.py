"""Render ``Screenshots/FSDiffReg.png``: the module panel beside three slice views after a registration.

Slicer itself cannot run here, so the screen is put together from the real parts that can:

- the registration: the module's own MRML layer (``FSDiffRegMRML``: ``RegistrationJob``,
  ``loadOutputs``, ``showDeformation``) on slicer-core's MRML scene, with the registration
  child process run by the project's Python (which has torch), on the bundled sample pair;
- the slice views: Slicer's own ``vtkMRMLSliceLogic`` (reslicing, layer blending: the fixed
  volume under the Jacobian), ``vtkMRMLTransformsDisplayableManager2D`` (deformation grid) and
  ``vtkMRMLColorLegendDisplayableManager`` (Jacobian colour legend), rendered offscreen by VTK,
  with the corner annotations that Slicer's DataProbe writes ("F: name (opacity%)", "B: name");
- the panel: the module's own ``FSDiffReg.ui`` loaded by Qt's ``QUiLoader``; the CTK and MRML
  widgets it names (ctkCollapsibleButton, qMRMLNodeComboBox, ctkPathLineEdit, qMRMLWidget)
  are stand-ins built on their nearest Qt classes, and the application frame (menu,
  module toolbar, slice-view bars) is drawn with plain Qt widgets.

A developer tool: PySide6 is not a project dependency. Run from the repository root
(the project's ``.venv`` must exist, for the registration process):

    python3.11 -m venv /tmp/shotvenv
    /tmp/shotvenv/bin/pip install PySide6-Essentials slicer-core SimpleITK numpy
    QT_QPA_PLATFORM=offscreen /tmp/shotvenv/bin/python Utilities/render_screenshot.py

Options: ``--python`` (the interpreter that runs the registration, default ``.venv/bin/python``)
and ``--out`` (default ``Screenshots/FSDiffReg.png``).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk
from PySide6.QtCore import Property, QFile, QRect, QSize, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPen, QPixmap
from PySide6.QtUiTools import QUiLoader
from PySide6.QtWidgets import (
    QAbstractSpinBox,
    QApplication,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMainWindow,
    QSlider,
    QStyle,
    QStyleOptionButton,
    QToolBar,
    QToolButton,
    QVBoxLayout,
    QWidget,
)
from vtk.util import numpy_support

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "FSDiffReg")]

from FSDiffRegLib.resources import sample_pair  # noqa: E402
from FSDiffRegMRML.display import showDeformation  # noqa: E402
from FSDiffRegMRML.job import RegistrationJob  # noqa: E402
from FSDiffRegMRML.process import RegisterOptions, Worker  # noqa: E402
from FSDiffRegMRML.registration_outputs import RegistrationOutputs, summary  # noqa: E402

#: The size of the screenshot (16:9; the Extensions Index names no size).
SIZE = QSize(1280, 720)
PANEL_WIDTH = 400
UI_FILE = ROOT / "FSDiffReg" / "Resources" / "UI" / "FSDiffReg.ui"
#: The module's device choices on a computer without CUDA (FSDiffReg.py removes "CUDA" there).
DEVICES = ["Auto", "CPU"]
GRID_MODES = ["Grid", "Glyph", "Contour"]
JACOBIAN_OPACITY = 0.35


@dataclass
class View:
    """One slice view of Slicer's default layout: its name, orientation, bar colour and offset axis."""

    name: str
    orientation: str
    color: str
    axis: str


VIEWS = [View("Red", "Axial", "#f34a33", "S"), View("Yellow", "Sagittal", "#edd54c", "R"),
         View("Green", "Coronal", "#6eb04b", "A")]


# --- the scene and the registration (the module's own MRML layer) --------------------------


def loadVolume(scene, path: Path, nodeClass=slicer.vtkMRMLScalarVolumeNode):
    """A volume read by Slicer's volume reader and named after its file, as Slicer's Add Data does."""
    node = nodeClass()
    node.SetName(path.name.removesuffix(".nii.gz"))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise OSError(f"cannot read {path}")
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    return node


def register(scene, python: str):
    """Register the bundled sample (ES to ED) through the module's RegistrationJob; its nodes and log."""
    sample = sample_pair()
    fixed = loadVolume(scene, sample["fixed"])
    moving = loadVolume(scene, sample["moving"])
    labels = loadVolume(scene, sample["moving_labels"], slicer.vtkMRMLLabelMapVolumeNode)
    log: list[str] = []
    worker = Worker(python)
    try:
        outputs = RegistrationJob(fixed, moving, labels, RegisterOptions(), worker).wait(onLines=log.extend)
    finally:
        worker.stop()
    showDeformation(outputs.transform, True, "grid", fixed)
    return {"fixedVolume": fixed, "movingVolume": moving, "movingLabels": labels,
            "outputTransform": outputs.transform, "warpedVolume": outputs.warped,
            "jacobianVolume": outputs.jacobian, "warpedLabels": outputs.warpedLabels}, outputs, log


def viewCentre(fixed, labels: Path) -> tuple[float, float, float]:
    """Where the views meet: the left ventricle's centre (label 3) in R and A, the volume's middle in S."""
    statistics = sitk.LabelShapeStatisticsImageFilter()
    statistics.Execute(sitk.ReadImage(str(labels)))
    x, y, _ = statistics.GetCentroid(3)
    bounds = [0.0] * 6
    fixed.GetRASBounds(bounds)
    return -x, -y, (bounds[4] + bounds[5]) / 2


# --- slice views (Slicer's own slice logic and displayable managers) -----------------------


def sliceLogic(scene, appLogic, view: View, size: QSize, centre, heightMm: float, background, foreground):
    """Slicer's logic of one slice view: its node, layers (foreground at JACOBIAN_OPACITY) and field of view."""
    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLApplicationLogic(appLogic)
    logic.SetMRMLScene(scene)
    appLogic.GetSliceLogics().AddItem(logic)
    sliceNode = logic.AddSliceNode(view.name)
    sliceNode.SetOrientation(view.orientation)
    sliceNode.SetDimensions(size.width(), size.height(), 1)
    composite = logic.GetSliceCompositeNode()
    composite.SetBackgroundVolumeID(background.GetID())
    composite.SetForegroundVolumeID(foreground.GetID())
    composite.SetForegroundOpacity(JACOBIAN_OPACITY)
    sliceNode.SetFieldOfView(heightMm * size.width() / size.height(), heightMm, sliceNode.GetFieldOfView()[2])
    sliceNode.JumpSliceByCentering(*centre)
    return logic


def sliderPosition(logic) -> float:
    """Where the slice lies in the volume (0 to 1), as the view bar's slider shows it."""
    bounds = [0.0] * 6
    logic.GetLowestVolumeSliceBounds(bounds)
    return (logic.GetSliceNode().GetSliceOffset() - bounds[4]) / max(bounds[5] - bounds[4], 1e-6)


def renderSliceView(logic, appLogic, size: QSize, legend: bool = False) -> QImage:
    """The view rendered offscreen: the slice logic's blended image, corner annotation, displayable managers.

    ``legend``: show the foreground's colour legend in this view.
    """
    renderer = vtk.vtkRenderer()
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(size.width(), size.height())
    window.SetNumberOfLayers(3)  # the colour legend draws in a renderer of its own, on a layer above
    window.AddRenderer(renderer)
    vtk.vtkRenderWindowInteractor().SetRenderWindow(window)
    mapper = vtk.vtkImageMapper()
    mapper.SetInputConnection(logic.GetImageDataConnection())
    mapper.SetColorWindow(255)
    mapper.SetColorLevel(127.5)
    image = vtk.vtkActor2D()
    image.SetMapper(mapper)
    renderer.AddViewProp(image)
    background = logic.GetBackgroundLayer().GetVolumeNode()
    foreground = logic.GetForegroundLayer().GetVolumeNode()
    renderer.AddViewProp(cornerAnnotation(background, foreground))
    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(appLogic)
    for manager in ("vtkMRMLTransformsDisplayableManager2D", "vtkMRMLColorLegendDisplayableManager"):
        if not factory.IsDisplayableManagerRegistered(manager):
            factory.RegisterDisplayableManager(manager)
    managers = factory.InstantiateDisplayableManagers(renderer)
    managers.SetMRMLDisplayableNode(logic.GetSliceNode())
    if legend:  # added after the displayable managers, which take it up from the scene's NodeAdded event
        colorLegend(foreground).AddViewNodeID(logic.GetSliceNode().GetID())
    window.Render()
    return windowImage(window)


def windowImage(window) -> QImage:
    """What a VTK render window shows, as a QImage."""
    capture = vtk.vtkWindowToImageFilter()
    capture.SetInput(window)
    capture.Update()
    width, height = window.GetSize()
    pixels = numpy_support.vtk_to_numpy(capture.GetOutput().GetPointData().GetScalars())
    rgb = np.ascontiguousarray(pixels.reshape(height, width, -1)[::-1, :, :3])
    return QImage(rgb.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


def colorLegend(volume):
    """Slicer's colour legend of the Jacobian volume, as the Colors module's "Show color legend" adds it."""
    legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(volume.GetDisplayNode())
    legend.SetTitleText("Jacobian")
    legend.SetNumberOfLabels(5)
    legend.SetLabelFormat("%.2f")
    return legend


def cornerAnnotation(background, foreground) -> vtk.vtkCornerAnnotation:
    """The lower-left layer names, worded as Slicer's DataProbe writes them."""
    annotation = vtk.vtkCornerAnnotation()
    annotation.SetText(0, f"F: {foreground.GetName()} ({int(JACOBIAN_OPACITY * 100)}%)\n"
                          f"B: {background.GetName()}")
    annotation.SetMinimumFontSize(12)
    annotation.SetMaximumFontSize(12)
    annotation.GetTextProperty().SetShadow(1)
    annotation.GetTextProperty().SetFontFamilyToArial()
    return annotation


# --- stand-ins for the CTK and MRML widgets named in the .ui -------------------------------


class qMRMLWidget(QWidget):
    """Stand-in: a plain container."""


class ctkCollapsibleButton(QWidget):
    """Stand-in: a full-width button header with an arrow, its contents below (hidden when collapsed)."""

    HEADER = 22

    def __init__(self, parent=None):
        super().__init__(parent)
        self._text = ""
        self._collapsed = False
        self.setContentsMargins(4, self.HEADER + 2, 2, 2)

    def getText(self) -> str:
        return self._text

    def setText(self, text: str) -> None:
        self._text = text
        self.update()

    def getCollapsed(self) -> bool:
        return self._collapsed

    def setCollapsed(self, collapsed: bool) -> None:
        self._collapsed = collapsed
        for child in self.findChildren(QWidget, options=Qt.FindChildOption.FindDirectChildrenOnly):
            child.setVisible(not collapsed)
        self.setFixedHeight(self.HEADER) if collapsed else self.setMaximumHeight(16777215)

    text = Property(str, getText, setText)
    collapsed = Property(bool, getCollapsed, setCollapsed)

    def paintEvent(self, event) -> None:
        painter = QPainter(self)
        option = QStyleOptionButton()
        option.initFrom(self)
        option.rect = QRect(0, 0, self.width(), self.HEADER)
        self.style().drawControl(QStyle.ControlElement.CE_PushButtonBevel, option, painter, self)
        arrow = QStyleOptionButton()
        arrow.initFrom(self)
        arrow.rect = QRect(6, 6, 10, 10)
        primitive = (QStyle.PrimitiveElement.PE_IndicatorArrowRight if self._collapsed
                     else QStyle.PrimitiveElement.PE_IndicatorArrowDown)
        self.style().drawPrimitive(primitive, arrow, painter, self)
        painter.drawText(QRect(22, 0, self.width() - 24, self.HEADER), Qt.AlignmentFlag.AlignVCenter, self._text)


class qMRMLNodeComboBox(QComboBox):
    """Stand-in: lists the scene's nodes of its ``nodeTypes`` (see ``fillNodeComboBoxes``)."""


class ctkPathLineEdit(QWidget):
    """Stand-in: an editable path with a browse button."""

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.lineEdit = QLineEdit(self)
        layout.addWidget(self.lineEdit)
        browse = QToolButton(self)
        browse.setText("...")
        layout.addWidget(browse)


def loadPanel() -> QWidget:
    """The module's .ui, loaded as Slicer's loadUI would, with the stand-ins above."""
    loader = QUiLoader()
    for widgetClass in (qMRMLWidget, ctkCollapsibleButton, qMRMLNodeComboBox, ctkPathLineEdit):
        loader.registerCustomWidget(widgetClass)
    file = QFile(str(UI_FILE))
    file.open(QFile.OpenModeFlag.ReadOnly)
    panel = loader.load(file)
    file.close()
    if panel is None:
        raise RuntimeError(f"cannot load {UI_FILE}: {loader.errorString()}")
    for button in panel.findChildren(ctkCollapsibleButton):
        button.setCollapsed(button.getCollapsed())
    return panel


def fillNodeComboBoxes(panel: QWidget, scene, chosen: dict) -> None:
    """Each node selector lists the scene's nodes of its types and shows its parameter's node."""
    for combo in panel.findChildren(qMRMLNodeComboBox):
        types = combo.property("nodeTypes")
        nodes = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
        combo.addItems([node.GetName() for node in nodes if node.GetClassName() in types])
        node = chosen.get(combo.property("SlicerParameterName"))
        combo.setCurrentText(node.GetName() if node is not None else "None")


def fillPanel(panel: QWidget, scene, chosen: dict, outputs: RegistrationOutputs, log: list[str]) -> None:
    """The panel as the module leaves it after a registration, with the deformation grid shown."""
    fillNodeComboBoxes(panel, scene, chosen)
    panel.findChild(QComboBox, "deviceComboBox").addItems(DEVICES)
    grid = panel.findChild(QComboBox, "gridModeComboBox")
    grid.addItems(GRID_MODES)
    panel.findChild(QWidget, "showGridCheckBox").setChecked(True)
    panel.findChild(QWidget, "refineStepsSpinBox").setValue(RegisterOptions.refineSteps)
    panel.findChild(QWidget, "progressBar").setValue(100)
    panel.findChild(QLabel, "summaryLabel").setText(summary(outputs.metrics))
    for line in log:
        panel.findChild(QWidget, "logText").appendPlainText(line)


# --- the application frame ----------------------------------------------------------------


def moduleDock(panel: QWidget) -> QDockWidget:
    """Slicer's module panel: help header, the module's widget, Data Probe at the bottom."""
    body = QWidget()
    layout = QVBoxLayout(body)
    layout.setContentsMargins(6, 4, 6, 4)
    for title, widget in (("Help & Acknowledgement", None), (None, panel), ("Data Probe", None)):
        if widget is None:
            widget = ctkCollapsibleButton()
            widget.setText(title)
            widget.setCollapsed(True)
        layout.addWidget(widget)
    dock = QDockWidget()
    dock.setTitleBarWidget(QWidget())
    dock.setWidget(body)
    dock.setFixedWidth(PANEL_WIDTH)
    return dock


def toolBar() -> QToolBar:
    """The load/save buttons and the module selector showing FSDiffReg."""
    bar = QToolBar()
    bar.setMovable(False)
    for text in ("DATA", "DCM", "SAVE"):
        button = QToolButton()
        button.setText(text)
        button.setFont(QFont("DejaVu Sans", 7, QFont.Weight.Bold))
        bar.addWidget(button)
    bar.addSeparator()
    bar.addWidget(QLabel(" Modules: "))
    selector = QComboBox()
    selector.addItem("FSDiffReg")
    selector.setMinimumWidth(180)
    bar.addWidget(selector)
    return bar


def pinIcon() -> QPixmap:
    """A small push-pin for the slice-view bars."""
    pixmap = QPixmap(12, 12)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setPen(QPen(QColor("#222222"), 1.4))
    painter.setBrush(QColor("#ffffff"))
    painter.drawEllipse(3, 1, 6, 6)
    painter.drawLine(6, 7, 6, 11)
    painter.end()
    return pixmap


class SliceWidget(QWidget):
    """A slice view: Slicer's coloured controller bar above the rendered view."""

    def __init__(self, view: View):
        super().__init__()
        self.view = view
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        bar = QFrame()
        bar.setObjectName("bar")
        bar.setStyleSheet(f"QFrame#bar {{ background: {view.color} }}")
        bar.setFixedHeight(22)
        row = QHBoxLayout(bar)
        row.setContentsMargins(4, 1, 4, 1)
        pin = QLabel()
        pin.setPixmap(pinIcon())
        name = QLabel(view.name[0])
        name.setFont(QFont("DejaVu Sans", 8, QFont.Weight.Bold))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.offset = QDoubleSpinBox()
        self.offset.setRange(-1000, 1000)
        self.offset.setDecimals(4)
        self.offset.setPrefix(f"{view.axis}: ")
        self.offset.setSuffix("mm")
        self.offset.setButtonSymbols(QAbstractSpinBox.ButtonSymbols.NoButtons)
        self.offset.setFrame(False)
        self.offset.setFixedWidth(92)
        for widget in (pin, name):
            row.addWidget(widget)
        row.addWidget(self.slider, 1)
        row.addWidget(self.offset)
        layout.addWidget(bar)
        self.image = QLabel()
        self.image.setMinimumSize(10, 10)
        self.image.setStyleSheet("background: black")
        layout.addWidget(self.image, 1)

    def display(self, image: QImage, offset: float, fraction: float) -> None:
        self.image.setPixmap(QPixmap.fromImage(image))
        self.offset.setValue(offset)
        self.slider.setValue(round(100 * fraction))


def mainWindow(panel: QWidget) -> tuple[QMainWindow, list[SliceWidget]]:
    """Slicer's main window: menus, toolbar, module panel on the left, red above yellow and green."""
    window = QMainWindow()
    for menu in ("File", "Edit", "View", "Help"):
        window.menuBar().addMenu(menu)
    window.addToolBar(toolBar())
    window.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, moduleDock(panel))
    views = QWidget()
    views.setObjectName("views")
    views.setStyleSheet("QWidget#views { background: #303030 }")
    grid = QGridLayout(views)
    grid.setContentsMargins(1, 1, 1, 1)
    grid.setSpacing(2)
    slices = [SliceWidget(view) for view in VIEWS]
    grid.addWidget(slices[0], 0, 0, 1, 2)
    grid.addWidget(slices[1], 1, 0)
    grid.addWidget(slices[2], 1, 1)
    grid.setRowStretch(0, 3)
    grid.setRowStretch(1, 2)
    window.setCentralWidget(views)
    window.statusBar().showMessage(" ")
    window.resize(SIZE)
    return window, slices


def render(python: str, out: Path) -> Path:
    """Register, build the screen, render the slice views into it and save it as a PNG."""
    scene = slicer.vtkMRMLScene()
    appLogic = slicer.vtkMRMLApplicationLogic()
    appLogic.SetMRMLScene(scene)
    colors = slicer.vtkMRMLColorLogic()
    colors.SetMRMLScene(scene)  # adds Slicer's default colour tables (Grey for volumes)
    scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())  # as the Colors module does
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    appLogic.SetSliceLogics(vtk.vtkCollection())
    chosen, outputs, log = register(scene, python)
    centre = viewCentre(chosen["fixedVolume"], sample_pair()["fixed_labels"])

    app = QApplication.instance() or QApplication(sys.argv)
    app.setStyle("Fusion")
    app.setFont(QFont("DejaVu Sans", 8))
    panel = loadPanel()
    panel.layout().setContentsMargins(0, 0, 0, 0)
    fillPanel(panel, scene, chosen, outputs, log)
    window, slices = mainWindow(panel)
    window.show()
    app.processEvents()
    logText = panel.findChild(QWidget, "logText")
    logText.verticalScrollBar().setValue(logText.verticalScrollBar().maximum())
    for widget, heightMm in zip(slices, (230.0, 120.0, 120.0)):
        size = widget.image.size()
        logic = sliceLogic(scene, appLogic, widget.view, size, centre, heightMm, chosen["fixedVolume"],
                           chosen["jacobianVolume"])
        image = renderSliceView(logic, appLogic, size, legend=widget.view.name == "Red")
        widget.display(image, logic.GetSliceNode().GetSliceOffset(), sliderPosition(logic))
    app.processEvents()
    out.parent.mkdir(parents=True, exist_ok=True)
    if not window.grab().toImage().convertToFormat(QImage.Format.Format_RGB888).save(str(out)):
        raise OSError(f"cannot write {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", default=str(ROOT / ".venv" / "bin" / "python"),
                        help="Python with the project installed (runs the registration)")
    parser.add_argument("--out", type=Path, default=ROOT / "Screenshots" / "FSDiffReg.png")
    args = parser.parse_args()
    print(render(args.python, args.out))


if __name__ == "__main__":
    main()
