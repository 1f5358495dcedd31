"""Serving a trained model: BatchNorm folded into convolutions (``folding``), micro-batched evaluation
(``batching``)."""

from fusionjax.deploy.batching import micro_batched
from fusionjax.deploy.folding import FoldedConv, FoldedNorm, FoldingPlan, fold_batchnorm, folding_plan

__all__ = ["FoldedConv", "FoldedNorm", "FoldingPlan", "fold_batchnorm", "folding_plan", "micro_batched"]
