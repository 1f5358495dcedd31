"""Measurement tools for any Flax image model: what each layer costs, how gradients and activations behave
through depth, what a training step keeps in memory, and what the loss looks like around trained weights.

- ``costs``: parameters and multiply-adds per layer (``layer_costs``), XLA's own operation count (``xla_flops``).
- ``gradients``: the loss gradient's norm per weight layer, in forward order (``layer_gradient_norms``).
- ``activations``: mean and variance of chosen modules' outputs, in call order (``activation_statistics``).
- ``memory``: the arrays a backward pass keeps (``saved_residual_bytes``), a compiled program's memory
  (``compiled_memory``).
- ``landscape``: filter-normalized directions and loss surfaces along them (Li et al. 2018).
- ``linear``: the linear algebra of fusion (``concat_kernel_for_add``, ``linear_reconstruction_error``).
- ``timing``: alternating wall-clock measurements of compiled calls (``alternating_times``).

Not imported by ``import fusionjax``. A walk-through on your own model: docs/analysis.md.
"""

from fusionjax.analysis.activations import ActivationStats, activation_statistics
from fusionjax.analysis.costs import LayerCost, layer_costs, parameter_count, xla_flops
from fusionjax.analysis.gradients import LayerGradient, layer_gradient_norms
from fusionjax.analysis.landscape import filter_normalized_direction, loss_landscape
from fusionjax.analysis.linear import concat_kernel_for_add, linear_reconstruction_error
from fusionjax.analysis.memory import CompiledMemory, compiled_memory, saved_residual_bytes
from fusionjax.analysis.timing import alternating_times

__all__ = [
    "ActivationStats", "CompiledMemory", "LayerCost", "LayerGradient", "activation_statistics",
    "alternating_times", "compiled_memory", "concat_kernel_for_add", "filter_normalized_direction",
    "layer_costs", "layer_gradient_norms", "linear_reconstruction_error", "loss_landscape", "parameter_count",
    "saved_residual_bytes", "xla_flops",
]
