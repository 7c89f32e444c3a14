"""FSDiffRegLib: the Qt-free core of the FSDiffReg 3D Slicer extension.

Feature-wise and Score-wise Diffusion-guided unsupervised deformable registration
of cardiac MRI (Qin & Li, MICCAI 2023), with preprocessing, training, evaluation and
a command line ``fsdiffreg``.
"""

__version__ = "0.1.0"
