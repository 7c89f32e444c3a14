"""Import every module of FSDiffRegLib, FSDiffRegMRML and FSDiffReg.py on this interpreter (run on Python 3.9).

Testing/test_python39.py runs this file with the pyenv 3.9.18 interpreter, as Slicer 5.8 and its
child process run the code. Importing runs what static checkers skip: class bodies, decorators,
dataclass fields, default values and the annotations a module evaluates (those without
``from __future__ import annotations``). Third-party packages this interpreter lacks (torch,
which has no small 3.9 build here; Slicer, Qt, CTK and VTK, which exist only inside Slicer) are
inert stand-ins: every attribute, call or base class made of them gives another stand-in, and
none supports ``X | Y``, as no class does on 3.9. Then the torch-free steps of ``register``
(reading and checking the bundled sample, the heart-centred network grids) run for real where
NumPy and SimpleITK are installed. Prints one JSON line: the version, real and stood-in packages
and the modules imported.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import pkgutil
import sys
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAND_IN = ("torch", "numpy", "SimpleITK", "nibabel", "matplotlib", "tqdm", "itk", "ants",
            "slicer", "qt", "ctk", "vtk", "PyTorchUtils", "distributed", "dask")


class StandInMeta(type):
    """Class-level behaviour of a stand-in: attributes are stand-ins; used as a decorator it gives back its argument."""

    def __getattr__(cls, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return stand_in(name)

    def __call__(cls, *args: object, **kwargs: object) -> object:
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return super().__call__()


class StandIn(metaclass=StandInMeta):
    """A stand-in instance: attributes and calls give stand-ins; used as a decorator it gives back its argument."""

    def __getattr__(self, name: str) -> object:
        if name.startswith("__"):
            raise AttributeError(name)
        return stand_in(name)()

    def __call__(self, *args: object, **kwargs: object) -> object:
        if len(args) == 1 and not kwargs and callable(args[0]):
            return args[0]
        return StandIn()


def stand_in(name: str) -> type:
    return StandInMeta(name, (StandIn,), {})


class StandInModule(types.ModuleType):
    """A package whose every attribute is a stand-in class and whose submodules are stand-ins too."""

    def __getattr__(self, name: str) -> type:
        if name.startswith("__"):
            raise AttributeError(name)
        return stand_in(name)


class StandInFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the packages of STAND_IN that this interpreter lacks, and their submodules, as stand-ins."""

    def __init__(self) -> None:
        self.absent = {name for name in STAND_IN if importlib.util.find_spec(name) is None}

    def find_spec(self, fullname: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] not in self.absent:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        return StandInModule(spec.name)

    def exec_module(self, module: types.ModuleType) -> None:
        module.__path__ = []


def import_all() -> list[str]:
    """Import each module of FSDiffRegLib and FSDiffRegMRML, then the Slicer module file; their names."""
    sys.path[:0] = [str(ROOT), str(ROOT / "FSDiffReg")]
    names = []
    for package in ("FSDiffRegLib", "FSDiffRegMRML"):
        folder = Path(importlib.import_module(package).__file__).parent
        names += [package] + [f"{package}.{m.name}" for m in pkgutil.iter_modules([str(folder)])]
    for name in names:
        importlib.import_module(name)
    spec = importlib.util.spec_from_file_location("FSDiffReg", ROOT / "FSDiffReg" / "FSDiffReg.py")
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    return [*names, "FSDiffReg"]


def prepare_sample() -> None:
    """Read, check and put the bundled sample on the network grids with the real NumPy and SimpleITK."""
    from FSDiffRegLib.imaging.imageio import read_image
    from FSDiffRegLib.imaging.preprocess import prepare_pair
    from FSDiffRegLib.model.config import Config
    from FSDiffRegLib.resources import sample_pair

    sample = sample_pair()
    pair = prepare_pair(read_image(sample["fixed"], "fixed"), read_image(sample["moving"], "moving"), Config())
    assert pair.fixed.shape == pair.moving.shape == Config().grid_size[::-1], pair.fixed.shape


def main() -> None:
    finder = StandInFinder()
    sys.meta_path.append(finder)
    modules = import_all()
    real = not {"numpy", "SimpleITK"} & finder.absent
    if real:
        prepare_sample()
    loaded = set(STAND_IN) & set(sys.modules)
    print(json.dumps({"python": sys.version.split()[0], "real": sorted(loaded - finder.absent),
                      "stand_ins": sorted(loaded & finder.absent), "modules": modules, "sample_prepared": real}))


if __name__ == "__main__":
    main()
