"""FSDiffReg's MRML layer: everything the Slicer module does to nodes, without Qt.

- ``process``: the ``fsdiffreg register`` and ``track`` commands in a child process, and its output;
- ``inputs``: checking input nodes and writing them to files;
- ``registration_outputs``: turning the library's output files into new MRML nodes;
- ``display``: Jacobian colours, the deformation grid, slice-view layers;
- ``job``: one registration of MRML nodes, from inputs to output nodes;
- ``cine_inputs``, ``cine_job``, ``cine_outputs``: the same for tracking a cine (``fsdiffreg track``):
  a volume sequence or a multivolume and its ED labels in; sequences of transforms and segmentations, the volume and
  function tables and their plot out.
- ``segment_job``: segmenting a cine's reference frame (``fsdiffreg segment``) into an RV, Myo, LV segmentation.

It lives in a package (not beside ``FSDiffReg.py``) because Slicer takes every ``.py``
file in a module folder for a module of its own.
"""
