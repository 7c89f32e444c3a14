"""The errors the command line reports as one line; torch-free, so ``fsdiffreg`` starts fast."""


class InputError(ValueError):
    """An input the pipeline cannot use; the message names the problem."""


class WeightsError(ValueError):
    """Weights that are missing, corrupt or do not fit the network."""


class DeviceError(ValueError):
    """A device that is not available here, or no torch to run on."""
