"""The XLA:CPU kernels: what each is for, read off the compiled CPU program (with the plain ops as the
counterfactual), the ``kernels.use`` switch, and the process-wide flag ``import fusionjax`` sets."""

import os
import re
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fusionjax
from fusionjax import blocks, kernels
from fusionjax.kernels import cpu_flags
from fusionjax.layers import Conv2d


def _entry_instructions(fn, *args) -> list[str]:
    """The compiled program's top-level instructions (XLA:CPU)."""
    entry = jax.jit(fn).lower(*args).compile().as_text().split("\nENTRY ")[1]
    return [line.strip() for line in entry.splitlines() if " = " in line]


def test_use_rejects_unknown_modes_and_restores_the_previous_one():
    with pytest.raises(ValueError, match="auto, reference, xla_cpu"):
        with kernels.use("cuda"):
            pass
    with kernels.use("reference"):
        assert kernels.current_mode() == "reference"
        with kernels.use("xla_cpu"):
            assert kernels.current_mode() == "xla_cpu"
        assert kernels.current_mode() == "reference"
    assert kernels.current_mode() == "auto"


def test_the_modes_pick_the_kernel_or_the_plain_op():
    """A 1×1 convolution is a matrix product in the CPU kernel and a convolution in the plain op; 'auto' picks the
    kernel on this CPU."""
    conv, x = Conv2d(8, kernel_size=1), jnp.ones((2, 4, 4, 16))
    params = conv.init(jax.random.key(0), x)

    def ops(mode):
        with kernels.use(mode):
            text = jax.jit(conv.apply).lower(params, x).as_text()
        return text.count("stablehlo.convolution"), text.count("stablehlo.dot_general")

    assert ops("reference") == (1, 0)
    assert ops("xla_cpu") == (0, 1)
    assert ops("auto") == (0, 1)


def test_a_jitted_function_is_traced_again_in_another_mode():
    """The mode is part of jit's cache key: one jitted function gives each mode's program, and each is cached."""
    conv, x = Conv2d(8, kernel_size=1), jnp.ones((2, 4, 4, 16))
    params = conv.init(jax.random.key(0), x)
    traced = []

    @jax.jit
    def apply(params, x):
        traced.append(kernels.current_mode())
        return conv.apply(params, x)

    auto = apply.lower(params, x).as_text()
    with kernels.use("reference"):
        reference = apply.lower(params, x).as_text()
        apply(params, x)
    apply(params, x)
    assert "stablehlo.dot_general" in auto and "stablehlo.convolution" in reference
    assert sorted(traced) == ["auto", "reference"]


def _widest_fusion(depth: int, train: bool) -> int:
    class Stage(flax.linen.Module):
        @flax.linen.compact
        def __call__(self, x):
            for _ in range(depth):
                x = blocks.BasicBlock(8)(x, train=train)
            return x

    stage, x = Stage(), jnp.ones((4, 8, 8, 8))
    variables = stage.init(jax.random.key(0), x)

    def loss(params):
        y, _ = stage.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, mutable=["batch_stats"])
        return y.sum()

    if train:
        instructions = _entry_instructions(jax.grad(loss), variables["params"])
    else:
        instructions = _entry_instructions(stage.apply, variables, x)
    fusions = [line for line in instructions if " fusion(" in line]
    return max(len(re.findall(r"%[\w.\-]+", line.split(" fusion(")[1].split("), kind=")[0])) for line in fusions)


@pytest.mark.parametrize("train", [True, False])
def test_residual_stream_is_stored_once_not_recomputed_by_every_later_block(train):
    """XLA:CPU fuses cheap element-wise producers into each consumer; down a residual stream that recomputes every
    earlier block's BN→add→ReLU inside each later one. The CPU kernel of ``layers.reused`` keeps the widest fusion
    the same size however deep the stage; the plain op (the identity) lets it grow."""
    assert _widest_fusion(8, train) <= _widest_fusion(4, train)
    with kernels.use("reference"):
        assert _widest_fusion(8, train) > _widest_fusion(4, train)


def _stem_slices(mode: str) -> list[int]:
    model, x = fusionjax.create_model("resnet20"), jnp.ones((4, 16, 16, 3))
    variables = model.init(jax.random.key(0), x, train=False)
    with kernels.use(mode):
        text = jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(variables, x).compile().as_text()
    return sorted(n for n in (len(re.findall(r"f32\[4,16,16,1\]\{[^}]*\} slice\(", computation))
                              for computation in text.split("\n\n")) if n)


def test_cifar_resnet_computes_its_element_wise_stem_once():
    """The CPU stem kernel's k·k·C shifted slices sit in one fused computation of the compiled forward (the stem's
    output is ``reused``: else XLA computes the stem inside both readers of the first block). The plain op is a
    convolution and has no such slices."""
    assert _stem_slices("auto") == [27]
    assert _stem_slices("reference") == []


def test_one_by_one_conv_gradient_reads_activations_in_place():
    """The CPU kernel's 1×1 convolution is xᵀ·dy over N·H·W rows: a product whose weight gradient needs no
    transposed copy of either operand (on the 4-D arrays XLA:CPU copied one into (channels, N·H·W))."""
    conv, x = Conv2d(32, kernel_size=1), jnp.ones((4, 8, 8, 16))
    params = conv.init(jax.random.key(0), x)

    def loss(params, x):
        return (jax.nn.relu(conv.apply(params, jax.nn.relu(x * 2.0))) * 3.0).sum()

    instructions = _entry_instructions(jax.grad(loss, argnums=(0, 1)), params, x)
    assert any(" dot(" in line for line in instructions)
    assert not [line for line in instructions if re.search(r"\b(transpose|copy)(\.\d+)? = ", line)]


def test_max_pool_kernel_has_no_select_and_scatter():
    """The CPU max-pool kernel differentiates by gathering each window's winner; the plain op's gradient is XLA's
    ``select_and_scatter``, several times slower on XLA:CPU."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 9, 9, 4)), jnp.float32)

    def grad_text(mode):
        with kernels.use(mode):
            return jax.jit(jax.grad(lambda x: fusionjax.layers.max_pool(x).sum())).lower(x).as_text()

    assert "select_and_scatter" not in grad_text("auto")
    assert "select_and_scatter" in grad_text("reference")


# ---------------------------------------------------------------------------------------------------------------
# The process-wide flag


def _python(code: str, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "FUSIONJAX_KEEP_XLA_FLAGS")}
    return subprocess.run([sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True,
                          timeout=120)


def test_import_sets_eigen_convolutions_before_jax_starts_and_the_flag_is_known():
    """``import fusionjax`` adds the flag, and this jaxlib accepts it (XLA aborts on a flag it does not know)."""
    result = _python("import os, fusionjax, jax; jax.numpy.ones(2).block_until_ready(); print(os.environ['XLA_FLAGS'])")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [cpu_flags.EIGEN_CONVOLUTIONS]


def test_import_leaves_a_users_choice_alone():
    own = "--xla_cpu_experimental_ynn_fusion_type=conv"
    result = _python("import os, fusionjax; print(os.environ['XLA_FLAGS'])", XLA_FLAGS=own)
    assert result.stdout.strip() == own
    result = _python("import os, fusionjax; print(os.environ.get('XLA_FLAGS', '-'))", FUSIONJAX_KEEP_XLA_FLAGS="1")
    assert result.stdout.strip() == "-"


def test_import_after_jax_started_warns_once_with_the_fix():
    result = _python("import warnings; warnings.simplefilter('always'); import jax; "
                     "jax.numpy.ones(2).block_until_ready(); import fusionjax; import fusionjax.layers")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("SlowCpuConvolutionsWarning") == 1, result.stderr
    assert cpu_flags.EIGEN_CONVOLUTIONS in result.stderr


def test_unknown_jaxlib_releases_are_left_alone(monkeypatch):
    monkeypatch.setattr(cpu_flags, "_jaxlib_version", lambda: (0, 99))
    environ = {}
    assert cpu_flags.prefer_eigen_convolutions(environ) == "unknown jaxlib" and environ == {}
