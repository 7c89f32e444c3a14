"""The output folder of ``fsdiffreg track`` turned into new MRML nodes, browsed with the cine.

- ``field_NN.nii.gz`` -> a sequence of grid transforms, read as Register's displacement
  field is (``outputs.readTransform``): the transform of frame N maps a point of frame N to the
  reference frame, so the reference frame placed under it lines up with frame N;
- ``labels_NN.nii.gz`` -> a sequence of segmentations, one per frame, segments named after
  the structures (RV, Myo, LV); each frame's labels are read from its own 3D file with Slicer's
  volume reader, as every release reads it (the releases read a volume sequence from NRRD only,
  so not the 4D ``labels.nii.gz`` the folder also holds);
- ``volumes.csv`` and the strain of ``function.json`` -> a table with a row per frame;
- the other values of ``function.json`` (ED and ES frames, EDV, ESV, SV, EF, mass, peak
  strain) -> a second table, one quantity per row; ``function.json`` and ``metrics.json`` whole
  as attributes ``FSDiffReg.function`` and ``FSDiffReg.metrics`` of the first table;
- the peak strain per AHA segment of ``function.json`` (``strain.segments``, what the bullseye
  ``strain_bullseye.png`` draws) -> a table of 16 rows: segment, name, peak circumferential and
  radial strain (NaN where a segment has no myocardium), and the two bullseyes as coloured models in the
  3D view above the heart (``bullseye.py``);
- the ``quality`` notes of ``function.json`` -> appended to the one-line summary (``cineSummary``);
- a plot chart of the volume curves (solid) and strain curves (dashed) against the frame number;
- the new sequences added to the cine's own sequence browser, so that its toolbar steps through the
  cine and its outputs together (no second browser, no second proxy of the cine); a new browser of
  the cine only where it has none.

The new sequences of a volume sequence take its index (name, unit, values). A multivolume has no
sequence and no browser (MultiVolumeExplorer shows its frames): its outputs get a new browser whose
master is the transforms sequence, indexed by the frames' time ("time", ms) where the cine gives
plausible times, else by the frame number ("frame", 1 to N); the multivolume itself stays as it is.
Frame numbers (1-based) are in the table and the item names.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import slicer
import vtk

from FSDiffRegLib.labels import structure_name

from .bullseye_models import addBullseyes
from .cine_inputs import Structure, cineFrames, frameCount, frameTimesMs
from .registration_outputs import Node, readTransform, readVolume

#: Units of the table's columns and function values, from the suffix of their names.
UNITS = {"_ml": "ml", "_ms": "ms", "_percent": "%", "_g": "g"}
#: Strain per frame: function.json's list -> the table's column.
STRAIN_COLUMNS = {"radial_percent": "radial_strain_percent",
                  "circumferential_percent": "circumferential_strain_percent"}
STRAIN_COLORS = {"radial_strain_percent": (0.95, 0.6, 0.1), "circumferential_strain_percent": (0.6, 0.3, 0.75)}


@dataclass
class CineOutputs:
    """The new nodes of one tracking, and what the library measured."""

    transforms: Node  # vtkMRMLSequenceNode of vtkMRMLGridTransformNode
    segmentations: Node  # vtkMRMLSequenceNode of vtkMRMLSegmentationNode
    table: Node  # vtkMRMLTableNode: a row per frame
    functionTable: Node  # vtkMRMLTableNode: quantity, value, unit
    chart: Node  # vtkMRMLPlotChartNode
    series: list  # vtkMRMLPlotSeriesNode of each curve
    browser: Node  # vtkMRMLSequenceBrowserNode: the cine's own, or a new one
    function: dict
    metrics: dict
    segmentTable: Node = None  # vtkMRMLTableNode: a row per AHA segment; None without segment strain
    bullseyes: list = field(default_factory=list)  # vtkMRMLModelNode of each bullseye (bullseye_models.py)


def framePath(outDir: Path, stem: str, number: int, frames: int) -> Path:
    """``field_01.nii.gz``, ``labels_01.nii.gz``: 1-based, zero-padded to the width of the frame count, at least
    2 digits."""
    return outDir / f"{stem}_{number:0{max(2, len(str(frames)))}d}.nii.gz"


def frameIndex(cine) -> tuple[str, str, list[str]]:
    """The outputs' index (name, unit, values): a volume sequence's own; for a multivolume, the frames' times
    in ms where plausible, else the frame numbers (1-based)."""
    if cine.IsA("vtkMRMLSequenceNode"):
        return (cine.GetIndexName(), cine.GetIndexUnit(),
                [cine.GetNthIndexValue(i) for i in range(cine.GetNumberOfDataNodes())])
    times = frameTimesMs(cine)
    if times is not None:
        return "time", "ms", [f"{t:g}" for t in times]
    return "frame", "", [str(number) for number in range(1, frameCount(cine) + 1)]


def newSequence(cine, itemNodes: Iterable, name: str):
    """A new sequence (in no scene) of ``itemNodes`` (copied), one per frame, at the values of ``frameIndex``.

    Given one at a time (a generator), each node is freed once copied: a frame at a time in memory twice.
    """
    sequence = slicer.vtkMRMLSequenceNode()
    indexName, unit, values = frameIndex(cine)
    if cine.IsA("vtkMRMLSequenceNode"):
        sequence.CopySequenceIndex(cine)
    else:
        sequence.SetIndexName(indexName)
        sequence.SetIndexUnit(unit)
        sequence.SetIndexType(slicer.vtkMRMLSequenceNode.NumericIndex)
    for number, node in enumerate(itemNodes, 1):
        node.SetName(f"{name} frame {number}")
        sequence.SetDataNodeAtValue(node, values[number - 1])
    return sequence


def readTransforms(outDir: Path, cine):
    """The displacement field of every frame, as a sequence of grid transforms."""
    frames = frameCount(cine)
    paths = (framePath(outDir, "field", n, frames) for n in range(1, frames + 1))
    return newSequence(cine, (readTransform(path) for path in paths), "transform")


def readLabelFrame(path: Path, frame, what: str = "tracking output"):
    """A new label map (in no scene) from the 3D label file ``path``, given ``frame``'s grid exactly."""
    return readVolume(path, slicer.vtkMRMLLabelMapVolumeNode(), frame, what, "the cine's voxel grid")


def labelSegmentation(labelmap, frame, structures: dict[int, Structure], scene):
    """A new segmentation in ``scene`` with a segment per structure (even an empty one), filled from ``labelmap``."""
    segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    ids = vtk.vtkStringArray()  # the n-th ID receives label value n
    for value in range(1, max(structures) + 1):
        structure = structures.get(value)
        ids.InsertNextValue(structure_name(value) if structure else "")
        if structure:
            segment = slicer.vtkSegment()
            segment.SetName(structure.name)
            if structure.color is not None:
                segment.SetColor(*structure.color)
            segmentation.GetSegmentation().AddSegment(segment, structure_name(value))
    if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(labelmap, segmentation, ids):
        raise OSError("cannot fill a tracked segmentation from the tracked labels")
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(frame)
    return segmentation


def readSegmentations(outDir: Path, cine, structures: dict[int, Structure]):
    """The tracked labels of every frame, as a sequence of segmentations."""
    frames = cineFrames(cine)
    scene = slicer.vtkMRMLScene()  # where the segmentations are made (and get display nodes) before being copied
    labelmaps = [readLabelFrame(framePath(outDir, "labels", n, len(frames)), frame)
                 for n, frame in enumerate(frames, 1)]
    return newSequence(cine, (labelSegmentation(labelmap, frame, structures, scene)
                              for labelmap, frame in zip(labelmaps, frames)), "labels")


def splitUnit(name: str) -> tuple[str, str]:
    """``"EDV_ml"`` -> ``("EDV", "ml")``; a name without a unit suffix -> ``(name, "")``."""
    suffix = next((s for s in UNITS if name.endswith(s)), "")
    return name[:len(name) - len(suffix)], UNITS.get(suffix, "")


def addColumn(table, name: str, values: list, array) -> None:
    array.SetName(name)
    for value in values:
        array.InsertNextValue(value)
    table.AddColumn(array)
    table.SetColumnUnitLabel(name, splitUnit(name)[1])


def frameTable(outDir: Path, function: dict, frames: int):
    """A new table: ``volumes.csv`` (frame, time if given, ml per structure) and the strain per frame."""
    with (outDir / "volumes.csv").open(newline="") as file:
        rows = list(csv.DictReader(file))
    if len(rows) != frames:
        raise OSError(f"the tracking output volumes.csv has {len(rows)} rows, the cine {frames} frames")
    table = slicer.vtkMRMLTableNode()
    for name in rows[0]:
        if name == "frame":
            addColumn(table, name, [int(row[name]) for row in rows], vtk.vtkIntArray())
        else:
            addColumn(table, name, [float(row[name]) for row in rows], vtk.vtkDoubleArray())
    strain = function.get("strain") or {}
    for key, name in STRAIN_COLUMNS.items():
        if key in strain:
            addColumn(table, name, [float(v) for v in strain[key]], vtk.vtkDoubleArray())
    return table


def functionRows(function: dict, section: str = "") -> list[tuple[str, float, str]]:
    """(quantity, value, unit) of every number of ``function.json`` (lists and nulls left out)."""
    rows = []
    for key, value in function.items():
        if isinstance(value, dict):
            rows += functionRows(value, f"{section} {key}".strip())
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            stem, unit = splitUnit(key)
            rows.append((f"{section} {stem}".strip().replace("_", " "), float(value), unit))
    return rows


def functionTable(function: dict):
    """A new table of the function values: quantity, value, unit."""
    rows = functionRows(function)
    table = slicer.vtkMRMLTableNode()
    addColumn(table, "quantity", [row[0] for row in rows], vtk.vtkStringArray())
    addColumn(table, "value", [row[1] for row in rows], vtk.vtkDoubleArray())
    addColumn(table, "unit", [row[2] for row in rows], vtk.vtkStringArray())
    return table


def segmentTable(function: dict):
    """A new table of the peak strain per AHA segment (``strain.segments``), or None where there is none."""
    segments = (function.get("strain") or {}).get("segments")
    if not segments:
        return None
    table = slicer.vtkMRMLTableNode()
    addColumn(table, "segment", [int(item["segment"]) for item in segments], vtk.vtkIntArray())
    addColumn(table, "name", [item.get("name", "") for item in segments], vtk.vtkStringArray())
    for key in ("peak_circumferential_percent", "peak_radial_percent"):
        addColumn(table, key, [float("nan") if item[key] is None else float(item[key]) for item in segments],
                  vtk.vtkDoubleArray())
    return table


def curves(table, structures: dict[int, Structure]) -> list:
    """New plot series (in no scene) of each volume and strain column of ``table`` against the frames' time
    where the table has it, else their number."""
    columns = tableColumns(table)
    x = xColumn(columns)
    wanted = [(f"{structure_name(v)}_ml", f"{s.name} volume", s.color, False) for v, s in structures.items()]
    wanted += [(column, column.replace("_percent", "").replace("_", " "), color, True)
               for column, color in STRAIN_COLORS.items()]
    series = []
    for column, name, color, dashed in wanted:
        if column not in columns:
            continue
        curve = slicer.vtkMRMLPlotSeriesNode()
        curve.SetName(name)
        curve.SetXColumnName(x)
        curve.SetYColumnName(column)
        curve.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        curve.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleDash if dashed
                           else slicer.vtkMRMLPlotSeriesNode.LineStyleSolid)
        curve.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleCircle)
        if color is not None:
            curve.SetColor(*color)
        series.append(curve)
    return series


def tableColumns(table) -> set[str]:
    """The column names of a table node."""
    return {table.GetTable().GetColumnName(c) for c in range(table.GetNumberOfColumns())}


def xColumn(columns: set[str]) -> str:
    """The curves' x: the frames' time (ms) where the table has it, else the frame number."""
    return "time_ms" if "time_ms" in columns else "frame"


def chart(x: str):
    """A new plot chart (in no scene) with its axes named; ``x`` is the curves' x column."""
    node = slicer.vtkMRMLPlotChartNode()
    node.SetXAxisTitle("time (ms)" if x == "time_ms" else "frame")
    node.SetYAxisTitle("volume (ml), strain (%)")
    node.SetLegendVisibility(True)
    return node


def readCineOutputs(outDir: Path, cine, structures: dict[int, Structure]) -> CineOutputs:
    """New nodes (in no scene yet) from the files in ``outDir``."""
    function = json.loads((outDir / "function.json").read_text())
    metrics = json.loads((outDir / "metrics.json").read_text())
    frames = frameCount(cine)
    table = frameTable(outDir, function, frames)
    table.SetAttribute("FSDiffReg.function", json.dumps(function))
    table.SetAttribute("FSDiffReg.metrics", json.dumps(metrics))
    return CineOutputs(readTransforms(outDir, cine), readSegmentations(outDir, cine, structures), table,
                       functionTable(function), chart(xColumn(tableColumns(table))), curves(table, structures),
                       None, function, metrics, segmentTable(function))


def cineBrowser(cine, sequencesLogic):
    """The sequence browser that already browses the cine (a volume sequence), or None."""
    return sequencesLogic.GetFirstBrowserNodeForSequenceNode(cine) if cine.IsA("vtkMRMLSequenceNode") else None


def addCineToScene(outputs: CineOutputs, cine, labels, sequencesLogic) -> None:
    """Name the new nodes, add them to the cine's scene, link them, and browse the new sequences with the cine's
    own browser (its settings kept), or a new one where it has none; make the proxy nodes of the new sequences."""
    scene = cine.GetScene()
    named = [(outputs.transforms, f"{cine.GetName()} FSDiffReg transforms"),
             (outputs.segmentations, f"{labels.GetName()} tracked"),
             (outputs.table, f"{cine.GetName()} volumes and strain"),
             (outputs.functionTable, f"{cine.GetName()} cardiac function"),
             (outputs.chart, f"{cine.GetName()} volume and strain curves")]
    if outputs.segmentTable is not None:
        named.append((outputs.segmentTable, f"{cine.GetName()} strain per AHA segment"))
    for node, name in named:
        node.SetName(scene.GenerateUniqueName(name))
        scene.AddNode(node)
    if outputs.segmentTable is not None:
        bounds = [0.0] * 6
        labels.GetRASBounds(bounds)
        outputs.bullseyes = addBullseyes(scene, outputs.function["strain"]["segments"], bounds, cine.GetName())
    for curve in outputs.series:
        scene.AddNode(curve)
        curve.SetAndObserveTableNodeID(outputs.table.GetID())
        outputs.chart.AddAndObservePlotSeriesNodeID(curve.GetID())
    outputs.browser = cineBrowser(cine, sequencesLogic)
    if outputs.browser is None:
        outputs.browser = slicer.vtkMRMLSequenceBrowserNode()
        outputs.browser.SetName(scene.GenerateUniqueName(f"{cine.GetName()} FSDiffReg"))
        scene.AddNode(outputs.browser)
        master = cine if cine.IsA("vtkMRMLSequenceNode") else outputs.transforms
        outputs.browser.SetAndObserveMasterSequenceNodeID(master.GetID())
    outputs.browser.AddSynchronizedSequenceNodeID(outputs.transforms.GetID())
    outputs.browser.AddSynchronizedSequenceNodeID(outputs.segmentations.GetID())
    sequencesLogic.UpdateProxyNodesFromSequences(outputs.browser)
    outputs.browser.GetProxyNode(outputs.segmentations).CreateDefaultDisplayNodes()


def loadCineOutputs(outDir: Path, cine, labels, structures: dict[int, Structure], sequencesLogic) -> CineOutputs:
    """The outputs as new nodes, added to the scene only once every file was read."""
    outputs = readCineOutputs(outDir, cine, structures)
    addCineToScene(outputs, cine, labels, sequencesLogic)
    return outputs


def cineSummary(function: dict, metrics: dict) -> str:
    """The one-line result shown to the user: ED and ES frames, ejection fractions, time, then the quality notes
    (why not to trust the results) where there are any."""
    parts = [f"ED frame {function['ED_frame']}"]
    if function.get("ES_frame") is not None:
        parts.append(f"ES frame {function['ES_frame']}")
    parts += [f"{name} EF {function[name]['EF_percent']:.1f} %" for name in ("LV", "RV") if name in function]
    notes = [note["message"] for note in function.get("quality") or []]
    return (f"{', '.join(parts)}; {function.get('frames', '?')} frames in {metrics['seconds']:.1f} s "
            f"on {metrics['device']}" + (f"; check: {'; '.join(notes)}" if notes else ""))
