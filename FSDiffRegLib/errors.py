"""The errors the command line reports as one line; torch-free, so ``fsdiffreg`` starts fast."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """An input the pipeline cannot use; the message names the problem."""


class WeightsError(ValueError):
    """Weights that are missing, corrupt or do not fit the network."""


class DeviceError(ValueError):
    """A device that is not available here, or no torch to run on."""


class OutputError(ValueError):
    """An out-dir that cannot be used, or outputs that must not be written; the message says why."""


class WriteError(OutputError):
    """A file of the set that was not written whole; ``output_folder`` adds the out-dir to the message."""

    def __init__(self, path: Path, cause: str) -> None:
        super().__init__(f"cannot write {path.name}: {cause}")
        self.name, self.cause = path.name, cause
