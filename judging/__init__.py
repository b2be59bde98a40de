"""Judging: how close an exported file is to PyTorch, apart from the code that builds it.

The verification inputs (inputs.py), the PyTorch references and the fp32 noise floor
(references.py), the one parity statistic (parity.py), the two gate questions (gates.py), which
rows each artifact is judged on (judged_rows.py), where a file departs from PyTorch
(boundaries.py, divergence.py), re-verifying an export folder (verify.py), judging joints produced
on a phone against the golden vectors (golden.py), and the export folder's record itself
(manifest.py: every file, its verdict and the figures behind it). Nothing here imports a converter
or the build: the export, the bench, ``verify``, ``diagnose`` and ``check-golden`` all judge with it.
"""
