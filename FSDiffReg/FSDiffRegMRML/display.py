"""How the outputs look: Jacobian colours, and the deformation shown in the slice views."""

from __future__ import annotations

import slicer

JACOBIAN_COLORS = "FSDiffReg Jacobian"
FOLD_COLOR = (1.0, 0.85, 0.0)
FOLD_LIMIT = 1e-3

#: Slicer maps the display window onto 256 levels, then through the colour table.
LEVELS = 256
#: A window centred on 1 whose lowest level ends at FOLD_LIMIT: index 0 holds every
#: determinant <= FOLD_LIMIT (folds), index 128 starts at exactly 1.
JACOBIAN_WINDOW = 2 * (1.0 - FOLD_LIMIT) * LEVELS / (LEVELS - 2)

DEFORMATION_MODES = {
    "grid": slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GRID,
    "glyph": slicer.vtkMRMLTransformDisplayNode.VIS_MODE_GLYPH,
    "contour": slicer.vtkMRMLTransformDisplayNode.VIS_MODE_CONTOUR,
}


def jacobianColor(index: int) -> tuple[float, float, float]:
    """Colour of table entry ``index``: folds, then blue -> white (1) -> red."""
    half = LEVELS // 2
    if index == 0:
        return FOLD_COLOR
    if index < half:
        f = (index - 1) / (half - 2)
        return (f, f, 1.0)
    f = (index - half) / (half - 1)
    return (1.0, 1.0 - f, 1.0 - f)


def jacobianColorNode(scene):
    """The scene's Jacobian colour table: diverging around 1, folds in yellow (created once).

    Shown in editors, unlike Slicer's default colour tables: the Save dialog offers only
    such nodes, and a scene saved without the table reloads with the Jacobian in black.
    """
    existing = scene.GetFirstNodeByName(JACOBIAN_COLORS)
    if existing is not None and existing.IsA("vtkMRMLColorTableNode"):
        return existing
    table = slicer.vtkMRMLColorTableNode()
    table.SetName(JACOBIAN_COLORS)
    table.SetHideFromEditors(False)
    table.SetTypeToUser()
    table.SetNumberOfColors(LEVELS)
    for index in range(LEVELS):
        table.SetColor(index, *jacobianColor(index), 1.0)
    table.SetNamesFromColors()
    table.SetColorName(0, "fold (det <= 0)")
    table.SetColorName(LEVELS // 2, "det = 1 (volume kept)")
    scene.AddNode(table)
    return table


def showJacobian(volume) -> None:
    """Colour a Jacobian-determinant volume: white at 1, blue shrinking, red growing, folds yellow."""
    display = volume.GetDisplayNode()
    display.SetAndObserveColorNodeID(jacobianColorNode(volume.GetScene()).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevel(JACOBIAN_WINDOW, 1.0)
    display.SetInterpolate(False)


def showDeformation(transform, visible: bool, mode: str = "grid", region=None) -> None:
    """Show (or hide) a transform in the slice views as a grid, glyphs or contours."""
    if transform.GetDisplayNode() is None:
        transform.CreateDefaultDisplayNodes()
    display = transform.GetDisplayNode()
    display.SetVisualizationMode(DEFORMATION_MODES[mode])
    display.SetGridSpacingMm(5.0)
    display.SetGlyphSpacingMm(5.0)
    display.SetContourLevelsMmFromString("1 2 4 8")
    if region is not None:
        display.SetAndObserveRegionNode(region)
    display.SetVisibility(visible)
    display.SetVisibility2D(visible)
    display.SetVisibility3D(False)
