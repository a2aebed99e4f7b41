"""The TRUSTED kernel: what accepts evidence. `verify-compress check` runs only this (and the
core: IR, ONNX import, domain), never the code that finds evidence.

What it trusts: the ONNX files (identified by SHA-256) read by the importer, the domain written
in the certificate, Python, numpy, and python-flint's exact integer matrices.

- `format`: the certificate's one owner: a frozen dataclass per JSON object (parser, writer,
  the generated JSON Schema).
- `scaled`: exact arithmetic in bulk (integer arrays over a rational scale).
- `bounds`: certified pre-activation bounds from dual multipliers, computed exactly.
- `stability`: which claims the evidence proves (bounds on every proof box, case splits).
- `obligations`: the SMT-LIB2 stability obligations, re-derived and hashed.
"""
