"""Rule cases for fusionjax/claims/fusion.py: {claim ID: [(numbers, verdict), ...]}."""

from fusionjax.claims.base import CONFIRMED, NOT_MEASURABLE, PARTLY, REFUTED

RULE_CASES = {
    "A1": [
        (dict(add_keeps_width=True, concat_is_k_times=True, dense_layers_grow_by_k=True), CONFIRMED),
        (dict(add_keeps_width=True, concat_is_k_times=True, dense_layers_grow_by_k=False), REFUTED),
        (dict(add_keeps_width=False, concat_is_k_times=True, dense_layers_grow_by_k=True), REFUTED),
    ],
    "A2": [
        (dict(max_relative_difference=9.6e-7), CONFIRMED),  # the last full report
        (dict(max_relative_difference=1e-5), CONFIRMED),
        (dict(max_relative_difference=3e-3), REFUTED),  # e.g. a bfloat16 conv
    ],
    "A3": [
        (dict(params_exact=True, macs_exact=True, xla_deviation=0.038), CONFIRMED),  # the last full report
        (dict(params_exact=True, macs_exact=True, xla_deviation=0.12), PARTLY),
        (dict(params_exact=True, macs_exact=False, xla_deviation=0.01), REFUTED),
    ],
    "A4": [
        (dict(add_unexplained=0.095, concat_unexplained=8.2e-5), CONFIRMED),  # the last full report
        (dict(add_unexplained=0.004, concat_unexplained=8.2e-5), REFUTED),  # add of nearly proportional maps
        (dict(add_unexplained=0.095, concat_unexplained=2e-3), REFUTED),
    ],
    "A5": [
        (dict(backend="cpu", block_ratio=1.02, network_ratio=1.26), NOT_MEASURABLE),  # the last full report (CPU)
        (dict(backend="gpu", block_ratio=1.35, network_ratio=1.8), CONFIRMED),
        (dict(backend="gpu", block_ratio=1.02, network_ratio=1.26), PARTLY),
        (dict(backend="gpu", block_ratio=0.97, network_ratio=1.05), REFUTED),
    ],
}
