"""Load FSDiffReg/FSDiffReg.py itself outside the Slicer application.

slicer-core gives the real ``slicer`` MRML classes and ``slicer.util``; what only the
application has is replaced by inert stand-ins: the ``qt`` and ``ctk`` modules, the GUI
names of ``slicer`` (``slicer.app``, ``slicer.q*`` widget classes, ``slicer.i18n``,
``slicer.ScriptedLoadableModule``). Slicer's own ``parameterNodeWrapper`` of a chosen
release (``../shared/slicer-python``) is loaded as ``slicer.parameterNodeWrapper``.

Run as a script (``python slicer_standins.py RELEASE``) it loads the module file in a fresh
interpreter and prints JSON: what loading it imported, and the serializer and default of
every parameter. Where slicer-core is missing (Python 3.9 here) the MRML classes are
placeholders, and third-party packages without a build there are inert too.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import sys
import types
import unittest
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODULE_FILE = ROOT / "FSDiffReg" / "FSDiffReg.py"
SLICER_PYTHON = ROOT.parent / "shared" / "slicer-python"
RELEASES = ("5.8.1", "5.10.0", "5.12.3")


class Signal:
    """A Qt signal: connect, disconnect and emit; ``slots`` shows what is connected."""

    def __init__(self):
        self.slots = []

    def connect(self, slot):
        self.slots.append(slot)

    def disconnect(self, slot):
        self.slots.remove(slot)

    def emit(self, *args):
        """Call every slot, with as many of ``args`` as it takes (as PythonQt does)."""
        for slot in list(self.slots):
            parameters = inspect.signature(slot).parameters.values()
            if not any(p.kind == p.VAR_POSITIONAL for p in parameters):
                args = args[:len([p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)])]
            slot(*args)


class Widget:
    """A QWidget: dynamic properties, ``enabled``/``visible``, and a signal per name asked for.

    Every assignment to a public attribute is counted in ``writes`` (how often the GUI was updated).
    """

    def __init__(self, parameterName: str = "", **values):
        object.__setattr__(self, "writes", {})
        object.__setattr__(self, "_properties", {"SlicerParameterName": parameterName} if parameterName else {})
        self.enabled, self.visible = True, True
        for name, value in values.items():
            setattr(self, name, value)

    def __setattr__(self, name, value):
        self.writes[name] = self.writes.get(name, 0) + 1
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        signal = Signal()
        object.__setattr__(self, name, signal)
        return signal

    def property(self, name):
        return self._properties.get(name)

    def setProperty(self, name, value):
        self._properties[name] = value

    def isWidgetType(self) -> bool:
        return False

    def connections(self) -> int:
        """How many slots are connected to this widget's signals."""
        return sum(len(v.slots) for v in vars(self).values() if isinstance(v, Signal))


class ComboBox(Widget):
    def __init__(self, parameterName: str = ""):
        super().__init__(parameterName, items=[], currentIndex=-1)

    def clear(self):
        self.items = []
        self.currentIndex = -1

    def addItem(self, text):
        self.items = [*self.items, text]
        if self.currentIndex < 0:
            self.currentIndex = 0

    def removeItem(self, index):
        self.items = [t for i, t in enumerate(self.items) if i != index]
        if self.currentIndex >= len(self.items):
            self.currentIndex = len(self.items) - 1

    def findText(self, text) -> int:
        return self.items.index(text) if text in self.items else -1

    @property
    def currentText(self) -> str:
        return self.items[self.currentIndex] if 0 <= self.currentIndex < len(self.items) else ""


class SpinBox(Widget):
    def __init__(self, parameterName: str = ""):
        super().__init__(parameterName, value=0, minimum=0, maximum=99, decimals=0, singleStep=1)

    def setRange(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def setMinimum(self, minimum):
        self.minimum = minimum

    def setMaximum(self, maximum):
        self.maximum = maximum


class NodeComboBox(Widget):
    """A qMRMLNodeComboBox: ``attributes`` holds its attribute filters (node type -> attribute name, value)."""

    def __init__(self, parameterName: str = ""):
        super().__init__(parameterName, node=None, nodeTypes=[], attributes={})

    def currentNode(self):
        return self.node

    def setCurrentNode(self, node):
        self.node = node

    def addAttribute(self, nodeType, attributeName, attributeValue=None):
        self.attributes = {**self.attributes, nodeType: (attributeName, attributeValue)}


class SequencesModule:
    """``slicer.modules.sequences``: its logic, and the browsers ``showSequenceBrowser`` was asked to show
    (qSlicerSequencesModule's static Q_INVOKABLE, 5.8.1 to 5.12.3: the toolbar, if autoShowToolBar)."""

    def __init__(self, logic=None):
        self._logic, self.shown = logic, []

    def logic(self):
        return self._logic

    def showSequenceBrowser(self, browserNode) -> bool:
        self.shown.append(browserNode)
        return True


class InertType(type):
    """Classes whose every unknown class attribute is another inert class."""

    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        made = InertType(name, (Inert,), {})
        setattr(cls, name, made)
        return made


class Inert(metaclass=InertType):
    """A placeholder class: takes any arguments, does nothing."""

    def __init__(self, *args, **kwargs):
        pass


def placeholderModule(name: str, known: dict | None = None, base: type = Inert) -> types.ModuleType:
    """A module whose every other attribute is an inert class (made once per name)."""
    module = types.ModuleType(name)
    module.__dict__.update(known or {})

    def getattr_(attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        made = InertType(attribute, (base,), {})
        setattr(module, attribute, made)
        return made

    module.__getattr__ = getattr_
    return module


class QApplication:
    """``qt.QApplication``: its override cursor is ``slicer.app``'s (one stack, as in Qt)."""

    @staticmethod
    def setOverrideCursor(cursor):
        sys.modules["slicer"].app.setOverrideCursor(cursor)

    @staticmethod
    def restoreOverrideCursor():
        sys.modules["slicer"].app.restoreOverrideCursor()


def qtModule() -> types.ModuleType:
    return placeholderModule("qt", {"QApplication": QApplication, "QComboBox": ComboBox, "QSpinBox": SpinBox,
        "QDoubleSpinBox": type("QDoubleSpinBox", (SpinBox,), {}), "QCheckBox": type("QCheckBox", (Widget,), {}),
        "QWidget": Widget,
        "QTimer": type("QTimer", (Widget,), {"setInterval": lambda self, msec: setattr(self, "interval", msec),
                                             "setSingleShot": lambda self, single: setattr(self, "singleShot", single),
                                             "start": lambda self: setattr(self, "active", True),
                                             "stop": lambda self: setattr(self, "active", False)})})


def ctkModule() -> types.ModuleType:
    return placeholderModule("ctk", {"ctkPathLineEdit": type("ctkPathLineEdit", (Widget,), {"currentPath": ""})})


class Application:
    """``slicer.app``: records what is connected to its signals, and the override cursors set."""

    def __init__(self):
        self.connected = {}
        self.overrideCursors = 0  # how many wait cursors are set (slicer.util.tryWithErrorDisplay's)

    def connect(self, signal, slot):
        self.connected.setdefault(signal, []).append(slot)

    def testingEnabled(self) -> bool:
        return False

    def processEvents(self):
        pass

    def setOverrideCursor(self, cursor):
        self.overrideCursors += 1

    def restoreOverrideCursor(self):
        self.overrideCursors -= 1


class ModuleParent:
    """The ``parent`` Slicer gives a scripted module or widget."""

    def __init__(self):
        self.isEntered = False


def scriptedLoadableModule() -> types.ModuleType:
    """``slicer.ScriptedLoadableModule``: the four base classes, the logic making Slicer's singleton parameter node."""
    import slicer

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = parent or ModuleParent()
            self.layout = Widget()
            self.layout.addWidget = lambda widget: None

        def setup(self):
            pass

        def resourcePath(self, filename):
            return str(MODULE_FILE.parent / "Resources" / filename)

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = type(self).__name__.removesuffix("Logic")

        def getParameterNode(self):
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.vtkMRMLScriptedModuleNode()
                node.SetSingletonTag(self.moduleName)
                node.SetAttribute("ModuleName", self.moduleName)
                node = slicer.mrmlScene.AddNode(node)
            return node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        """A unittest.TestCase, as in Slicer (``slicer.testing.runUnitTest`` loads its test methods by name)."""

        def delayDisplay(self, message, msec=None):
            pass

    module = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(module, cls.__name__, cls)
    return module


def i18nModule() -> types.ModuleType:
    module = types.ModuleType("slicer.i18n")
    module.tr = lambda text: text
    module.translate = lambda context, text: text
    return module


def slicerPlaceholder() -> types.ModuleType:
    """``slicer`` where slicer-core is missing: MRML classes are placeholder subclasses of vtkMRMLNode."""
    node = InertType("vtkMRMLNode", (Inert,), {})
    module = placeholderModule("slicer", {"vtkMRMLNode": node}, base=node)
    module.__path__ = []
    util = types.ModuleType("slicer.util")
    util.VTKObservationMixin = type("VTKObservationMixin", (), {"__init__": lambda self: None})
    module.util = util
    sys.modules["slicer.util"] = util
    return module


def loadParameterNodeWrapper(release: str) -> types.ModuleType:
    """Slicer's own ``parameterNodeWrapper`` of ``release``, loaded afresh as ``slicer.parameterNodeWrapper``."""
    folder = SLICER_PYTHON / f"v{release}" / "parameterNodeWrapper"
    for name in [n for n in sys.modules if n.startswith("slicer.parameterNodeWrapper")]:
        del sys.modules[name]
    spec = importlib.util.spec_from_file_location("slicer.parameterNodeWrapper", folder / "__init__.py",
                                                  submodule_search_locations=[str(folder)])
    package = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = package
    spec.loader.exec_module(package)
    sys.modules["slicer"].parameterNodeWrapper = package
    return package


def install(release: str, scene=None) -> None:
    """Put the stand-ins in place (``sys.modules`` and ``slicer``), with ``release``'s parameterNodeWrapper."""
    sys.modules["qt"], sys.modules["ctk"] = qtModule(), ctkModule()
    try:
        import slicer
        import slicer.util  # noqa: F401 (slicer-core's own)
    except ImportError:
        sys.modules["slicer"] = slicer = slicerPlaceholder()
    for name in ("qMRMLNodeComboBox", "qMRMLSliderWidget", "qMRMLSpinBox", "qMRMLRangeWidget",
                 "qMRMLSubjectHierarchyTreeView", "qMRMLWidget"):
        setattr(slicer, name, NodeComboBox if name == "qMRMLNodeComboBox" else type(name, (Widget,), {}))
    for name, module in (("ScriptedLoadableModule", scriptedLoadableModule()), ("i18n", i18nModule())):
        sys.modules[f"slicer.{name}"] = module
        setattr(slicer, name, module)
    slicer.app = Application()
    slicer.mrmlScene = scene
    loadParameterNodeWrapper(release)
    for folder in (ROOT, MODULE_FILE.parent):  # the module folder, and FSDiffRegLib beside it
        if str(folder) not in sys.path:
            sys.path.insert(0, str(folder))


def loadModuleFile(name: str = "FSDiffReg", register: bool = True) -> types.ModuleType:
    """Execute FSDiffReg/FSDiffReg.py as module ``name``; in ``sys.modules`` while it runs if ``register``."""
    spec = importlib.util.spec_from_file_location(name, MODULE_FILE)
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        if register:
            del sys.modules[name]
    return module


def report(release: str) -> dict:
    """Load the module file on stand-ins in this interpreter; what it imported and how each parameter is stored."""
    missing = {name for name in ("numpy", "SimpleITK", "vtk", "packaging") if importlib.util.find_spec(name) is None}
    for name in ("numpy", "SimpleITK", "vtk", "vtk.util", "vtk.util.numpy_support", "packaging",
                 "packaging.requirements", "packaging.version"):
        if name.split(".")[0] in missing:
            sys.modules[name] = placeholderModule(name)
            sys.modules[name].__path__ = []
    install(release)
    before = set(sys.modules)
    module = loadModuleFile()
    parameters = module.FSDiffRegParameterNode.allParameters
    return {"python": list(sys.version_info[:2]), "imported": sorted(set(sys.modules) - before),
            "serializers": {name: type(info.serializer.serializer if hasattr(info.serializer, "serializer")
                                       else info.serializer).__name__ for name, info in parameters.items()},
            "defaults": {name: repr(info.default.value) for name, info in parameters.items()}}


if __name__ == "__main__":
    print(json.dumps(report(sys.argv[1])))
