"""FSDiffReg's MRML layer: everything the Slicer module does to nodes, without Qt.

- ``process``: the ``fsdiffreg register`` command in a child process, and its output;
- ``inputs``: checking input nodes and writing them to files;
- ``outputs``: turning the library's output files into new MRML nodes;
- ``display``: Jacobian colours, the deformation grid, slice-view layers;
- ``job``: one registration of MRML nodes, from inputs to output nodes.

It lives in a package (not beside ``FSDiffReg.py``) because Slicer takes every ``.py``
file in a module folder for a module of its own.
"""
