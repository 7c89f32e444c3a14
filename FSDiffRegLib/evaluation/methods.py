"""The methods ``benchmark`` and ``evaluate-function`` compare, chosen by name: the baselines and FSDiffReg's rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Callable

import SimpleITK as sitk

from ..defaults import NETWORK_ONLY, RefineOptions
from .baselines import BASELINE_NAMES, BASELINES, runnable
from .evaluate import row_name

Register = Callable[[sitk.Image, sitk.Image, sitk.Image], sitk.Image]  # (fixed, moving, moving labels) -> field


@dataclass
class Method:
    """A row of a table: its name and how it registers a pair (fixed, moving, the moving labels) -> field on the
    fixed grid."""

    name: str
    register: Register
    last: dict = field(default_factory=dict)  # FSDiffReg: the last run's fold removal (metrics.json's ``unfold``)


ModelMethod = Callable[[str, RefineOptions], Method]  # FSDiffReg's method: (row name, refinement) -> Method


def baseline_method(key: str) -> Method:
    """elastix, ANTs or the identity (they need no labels)."""
    def register(fixed: sitk.Image, moving: sitk.Image, moving_labels: sitk.Image) -> sitk.Image:
        return BASELINES[key](fixed, moving)

    return Method(BASELINE_NAMES[key], register)


def chosen_methods(names: Sequence[str], refine: RefineOptions,
                   model_method: ModelMethod) -> tuple[list[Method], list[str]]:
    """The methods ``names`` asks for, in table order (baselines, then the network alone, then refined as
    ``refine`` says), and a note for each one that cannot run here."""
    keys, skipped = runnable(list(names))
    methods = [baseline_method(key) for key in keys]
    if "network" in names:
        methods.append(model_method("FSDiffReg (network)", NETWORK_ONLY))
    if "refine" in names and refine.steps > 0:
        methods.append(model_method(row_name(refine), refine))
    elif "refine" in names:
        skipped.append("FSDiffReg (+refine 0): the network row")
    return methods, skipped
