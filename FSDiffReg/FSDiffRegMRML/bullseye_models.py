"""The bullseyes of ``strain_bullseye.png`` as model nodes: the peak strain per AHA segment in the 3D view.

Each bullseye (``FSDiffRegLib.outputs.bullseye.PANELS``: peak circumferential, peak radial strain) is a flat model of
annular sectors, one per segment that has a value, as the PNG draws them (``FSDiffRegLib.outputs.bullseye.wedge``:
rings basal outside, mid, apical inside; segment 1 at the top, numbers increasing counter-clockwise, as
seen from the apex): RING_MM wide rings in a coronal plane, read from the front as Slicer's 3D view shows
at first (anterior view: the patient's right on the viewer's left). The segment's peak strain is a cell
scalar (array named as function.json's key; ``segment`` holds the segment number) coloured through
a Rainbow colour table over the PNG's limits. A segment without myocardium has no cells (a gap).
The bullseyes stand side by side, GAP_MM above the labelled heart.
"""

from __future__ import annotations

import math

import slicer
import vtk

from FSDiffRegLib.outputs.bullseye import PANELS, wedge

RING_MM = 10.0  # width of a ring: the basal ring's outer radius is 4 rings
GAP_MM = 10.0  # between the heart and the bullseyes, and between the two bullseyes
STEPS_PER_TURN = 72  # cells along a full circle (5 degrees each)


def sectorPolyData(segments: list[dict], key: str) -> vtk.vtkPolyData:
    """Quads of every segment with a value of ``key``, centred on (0, 0, 0) in the coronal (R, S) plane; cell
    arrays ``key`` (the value) and ``segment`` (its number)."""
    points, quads = vtk.vtkPoints(), vtk.vtkCellArray()
    values, numbers = vtk.vtkDoubleArray(), vtk.vtkIntArray()
    values.SetName(key)
    numbers.SetName("segment")
    for item in segments:
        if item[key] is None:
            continue
        angle, width, inner = wedge(item["segment"])
        steps = max(1, round(STEPS_PER_TURN * width / (2 * math.pi)))
        for step in range(steps):
            corners = []
            for a in (angle - width / 2 + width * step / steps, angle - width / 2 + width * (step + 1) / steps):
                for radius in (inner, inner + 1.0):  # the viewer's right is the patient's left (-R)
                    corners.append(points.InsertNextPoint(-RING_MM * radius * math.cos(a), 0.0,
                                                          RING_MM * radius * math.sin(a)))
            quads.InsertNextCell(4, [corners[0], corners[1], corners[3], corners[2]])
            values.InsertNextValue(float(item[key]))
            numbers.InsertNextValue(int(item["segment"]))
    polyData = vtk.vtkPolyData()
    polyData.SetPoints(points)
    polyData.SetPolys(quads)
    polyData.GetCellData().AddArray(values)
    polyData.GetCellData().AddArray(numbers)
    return polyData


def colorTable(scene):
    """The colour table of the bullseyes: a new Rainbow table in ``scene``."""
    table = slicer.vtkMRMLColorTableNode()
    table.SetTypeToRainbow()
    table.SetName(scene.GenerateUniqueName("FSDiffReg strain colours"))
    scene.AddNode(table)
    return table


def addBullseyes(scene, segments: list[dict], bounds: list[float], name: str) -> list:
    """A model per bullseye of ``segments`` (function.json's ``strain.segments``) in ``scene``, above the RAS
    ``bounds`` of the labelled heart (R min, R max, A min, A max, S min, S max); named after ``name``."""
    table = colorTable(scene)
    outer = 4.0 * RING_MM
    centreR, centreA = (bounds[0] + bounds[1]) / 2, (bounds[2] + bounds[3]) / 2
    s = bounds[5] + GAP_MM + outer
    models = []
    for number, (key, title, limits, _) in enumerate(PANELS):
        polyData = sectorPolyData(segments, key)
        shift = vtk.vtkTransform()  # the first on the viewer's left (+R), the second on the right
        shift.Translate(centreR + (outer + GAP_MM / 2) * (1 if number == 0 else -1), centreA, s)
        moved = vtk.vtkTransformPolyDataFilter()
        moved.SetInputData(polyData)
        moved.SetTransform(shift)
        moved.Update()
        model = scene.AddNewNodeByClass("vtkMRMLModelNode", scene.GenerateUniqueName(f"{name} {title[:-4]} bullseye"))
        model.SetAndObservePolyData(moved.GetOutput())
        model.CreateDefaultDisplayNodes()
        display = model.GetDisplayNode()
        display.SetActiveScalarName(key)
        display.SetActiveAttributeLocation(vtk.vtkAssignAttribute.CELL_DATA)
        display.SetAndObserveColorNodeID(table.GetID())
        display.SetScalarRangeFlag(slicer.vtkMRMLDisplayNode.UseManualScalarRange)
        display.SetScalarRange(*limits)
        display.SetScalarVisibility(True)
        display.SetBackfaceCulling(False)
        models.append(model)
    return models
