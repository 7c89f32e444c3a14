"""matplotlib, imported only where a picture is drawn: Slicer's Python has none (the module does not install it:
Resources/requirements.txt), and a missing plotting library costs the picture, never the run."""

from __future__ import annotations

from types import ModuleType

from ..events import Report, note


def pyplot(picture: str, log: Report) -> ModuleType | None:
    """``matplotlib.pyplot`` drawing into files (the Agg backend, no display); None, after one line saying that
    ``picture`` is skipped, where matplotlib cannot be imported."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        log(note(f"{picture} skipped: matplotlib is missing ({err})"))
        return None
    return plt
