"""fusionjax against PyTorch, run as modules (``python -m benchmarks.compare``, ``.user_step``, ``.gpu``, …).

Shared parts: ``harness`` (alternating rounds), ``steps`` (the JAX side), ``torch_models`` (the PyTorch side),
``tables`` and ``records`` (RESULTS.md and the full records in runs/).
"""
