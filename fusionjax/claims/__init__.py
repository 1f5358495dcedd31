"""The claims of the fusion literature as code: ``CLAIMS`` maps each ID to the ``Claim`` that measures and decides it.

Groups: ``fusion`` (A1–A5: the arithmetic of add and concat), ``architecture`` (A6–A9: what the architectures'
papers say they do, shown on the zoo's models), ``counting`` (P: parameters and FLOPs), ``small_data`` (O7, P5:
DenseNet-BC vs ResNet), ``optimization`` (O1, O5, O8, O9: at initialization), ``depth`` (O2–O4, O6: training
deep nets on digits), ``very_deep`` (O10: a 1202-layer ResNet), ``memory`` (M: memory and deployment).
``fusionjax-claims`` (``cli.main``) runs them and writes the report (``report``). Not imported by
``import fusionjax``.
"""

from fusionjax.claims import architecture, counting, depth, fusion, memory, optimization, small_data, very_deep

_ORDER = "APOM"  # the report's order: fusion arithmetic, parameters and FLOPs, optimization, memory
_MODULES = (fusion, architecture, counting, optimization, depth, very_deep, small_data, memory)
CLAIMS = {c.id: c for c in sorted((c for module in _MODULES for c in module.CLAIMS),
                                  key=lambda c: (_ORDER.index(c.id[0]), int(c.id[1:])))}

__all__ = ["CLAIMS"]
