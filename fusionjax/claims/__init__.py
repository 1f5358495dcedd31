"""Every claim of issue 16 as code: ``CLAIMS`` maps each ID (A1…M4) to the ``Claim`` that measures it.

Groups: ``fusion`` (A: the arithmetic of add and concat), ``counting`` (P: parameters and FLOPs),
``optimization`` (O1, O5: at initialization), ``depth`` (O2–O4, O6: training deep nets on digits),
``small_data`` (O7, P5: DenseNet-BC vs ResNet on MNIST), ``memory`` (M: memory and deployment).
``fusionjax-claims`` (``cli.main``) runs them and writes the report (``report``).
Not imported by ``import fusionjax``.
"""

from fusionjax.claims import counting, depth, fusion, memory, optimization, small_data

_ORDER = "APOM"  # the order: fusion arithmetic, parameters and FLOPs, optimization, memory
CLAIMS = {c.id: c for c in sorted((c for module in (fusion, counting, optimization, depth, small_data, memory)
                                   for c in module.CLAIMS), key=lambda c: (_ORDER.index(c.id[0]), int(c.id[1:])))}

__all__ = ["CLAIMS"]
