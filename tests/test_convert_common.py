"""What the converter's parity tests share (test_convert*.py); no tests here, and no torch, so that the Keras tests
run where torch is not installed (``--without-torch``)."""

import jax
import numpy as np

# Float32 cross-checks: convolutions summing up to ~10⁴ products differ in their last bits between oneDNN (torch),
# XLA and Keras's JAX graph, so stages agree to rel ≈ 1e-7…1e-6; 1e-5 leaves a margin of 10 and still catches any
# wrong padding, epsilon or layer (those move a stage by 1e-4 or more).
LOGITS_ATOL = 1e-4  # max|Δ| of the logits, which the tests scale to O(10)
RTOL = 1e-5  # max|Δ| / max|source|, every stage
STAGES = ["stem", "stage1", "stage2", "stage3", "stage4", "pooled", "logits"]


def images(size: tuple[int, int], batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, *size, 3), dtype=np.float32)


def fusionjax_stages(model, variables, x: np.ndarray) -> dict[str, np.ndarray]:
    with jax.default_matmul_precision("highest"):
        features = jax.jit(lambda v, x: model.apply(v, x, features=True))(variables, x)
    return {stage: np.asarray(features[stage], np.float64) for stage in STAGES}


def assert_stages_agree(ours: dict, reference: dict, what: str) -> None:
    """Every stage within RTOL, the logits within LOGITS_ATOL, the same top-1; prints the largest stage error
    (``pytest -rP`` shows it: docs/converting.md quotes it)."""
    worst = 0.0
    for stage in STAGES:
        assert ours[stage].shape == reference[stage].shape, (what, stage)
        rel = np.max(np.abs(ours[stage] - reference[stage])) / np.max(np.abs(reference[stage]))
        assert rel <= RTOL, (what, stage, rel)
        worst = max(worst, rel)
    assert np.max(np.abs(ours["logits"] - reference["logits"])) <= LOGITS_ATOL, what
    assert np.array_equal(ours["logits"].argmax(-1), reference["logits"].argmax(-1)), what
    print(f"{what}: largest stage rel {worst:.1e}")
