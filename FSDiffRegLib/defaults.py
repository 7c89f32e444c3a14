"""Defaults the command line shows and the pipeline uses, importable without torch."""

DEFAULT_STEPS = 60  # refinement steps `register` runs unless told otherwise (Testing/benchmarks/refine_modes.py)
REFINE_SMOOTHNESS = 18.0  # smoothness weight of the refinement unless told otherwise
