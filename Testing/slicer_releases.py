"""slicer-core made to behave as the Slicer releases (5.8.1, 5.10.0, 5.12.3) where it does not, and
what Slicer's classes log, for the MRML tests.

- ``release_sequence_reading()``: ``vtkMRMLVolumeSequenceStorageNode`` reads NRRD only, as in the
  releases (5.8.1: ``vtkTeemNRRDReader``, whose ``CanReadFile`` takes .nrrd/.nhdr; 5.10.0 and
  5.12.3: ``vtkITKImageSequenceReader``, hard-wired to ``itk::NrrdImageIO``, "Cannot read the NRRD
  file"); slicer-core 5.13 reads a 4D NIfTI too.
- ``vtk_log()``: the warnings and errors VTK objects report meanwhile (Slicer's log).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import slicer
import vtk

NRRD = (".nrrd", ".nhdr")  # .seq.nrrd and .seq.nhdr end alike


class ReleaseVolumeSequenceStorageNode(slicer.vtkMRMLVolumeSequenceStorageNode):
    """The releases' volume sequence reader: anything but NRRD is not read (``ReadData`` gives 0)."""

    def ReadData(self, node, temporaryFile: bool = False) -> int:
        if not str(self.GetFileName() or "").lower().endswith(NRRD):
            return 0
        return super().ReadData(node, temporaryFile)


@contextmanager
def release_sequence_reading() -> Iterator[None]:
    """Every volume sequence storage node made meanwhile (in Python or by a scene) reads as the releases do."""
    slicer.vtkMRMLVolumeSequenceStorageNode.override(ReleaseVolumeSequenceStorageNode)
    try:
        yield
    finally:
        slicer.vtkMRMLVolumeSequenceStorageNode.override(None)


@dataclass
class Log:
    """What VTK objects reported while ``vtk_log()`` was open (filled when it closes)."""

    text: str = ""


@contextmanager
def vtk_log() -> Iterator[Log]:
    """Collect what VTK objects report (``vtkWarningMacro``, ``vtkErrorMacro``) meanwhile, as Slicer's log shows it."""
    previous = vtk.vtkOutputWindow.GetInstance()
    log = Log()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vtk.log"
        window = vtk.vtkFileOutputWindow()
        window.SetFileName(str(path))
        window.FlushOn()
        vtk.vtkOutputWindow.SetInstance(window)
        try:
            yield log
        finally:
            vtk.vtkOutputWindow.SetInstance(previous)
            del window  # closes the file
            log.text = path.read_text(errors="replace") if path.is_file() else ""
