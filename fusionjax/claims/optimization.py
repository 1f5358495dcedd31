"""O1 and O5, what happens at initialization: the gradient reaching each layer, and the signal's size after each
residual addition. Both run op by op in the plain ("reference") kernels: nets of one family share layer shapes,
so each op compiles once for all depths instead of once per whole network."""

import math

import jax
import numpy as np

from fusionjax import kernels
from fusionjax.analysis import activation_statistics, layer_gradient_norms
from fusionjax.blocks import ResidualBlock
from fusionjax.claims import data, nets, plots
from fusionjax.claims.base import CONFIRMED, PARTLY, REFUTED, Context, Outcome, claim, markdown_table, spread


def _first_and_last(norms) -> tuple[float, float]:
    return norms[0].grad_norm, norms[-1].grad_norm


@claim("O1", "gradients vanish in deep plain nets: the first layers of a 100-layer plain net get ~1e-20, a ResNet's "
             "~1e-2")
def gradient_norms(ctx: Context) -> Outcome:
    depths, seeds, batch = ctx.pick((20, 56, 110, 200), (8, 14)), range(ctx.pick(3, 1)), ctx.pick(32, 8)
    mnist = ctx.cached("mnist", data.mnist)
    images, labels = mnist.train_images[:batch], mnist.train_labels[:batch]
    norms = {}  # (kind, batch_norm, depth) -> per seed, per layer gradient norms
    with kernels.use("reference"):
        for batch_norm in (True, False):
            for kind in ("plain", "residual"):
                for depth in depths:
                    model = nets.cifar_net(depth, kind=kind, batch_norm=batch_norm)
                    per_seed = []
                    for seed in seeds:
                        variables = model.init(jax.random.key(seed), images[:2], train=False)
                        layers = layer_gradient_norms(model, variables, images, labels, jit=False)
                        per_seed.append([g.grad_norm for g in layers])
                    norms[kind, batch_norm, depth] = np.asarray(per_seed)
    near_100 = min(depths, key=lambda d: abs(d - 100))

    fig, axes = plots.subplots(2, width=6)
    for ax, batch_norm in zip(axes, (True, False)):
        for i, depth in enumerate(depths):
            for kind, style in (("plain", "--"), ("residual", "-")):
                values = norms[kind, batch_norm, depth]
                finite = np.where(np.isfinite(values), values, np.nan)
                plots.band(ax, np.arange(1, values.shape[1] + 1), finite, f"{kind}-{depth}", ls=style, color=f"C{i}")
        ax.set_yscale("log")
        ax.set(xlabel="weight layer (input side first)", ylabel="‖∂loss/∂kernel‖",
               title=f"at initialization, {'with' if batch_norm else 'without'} BatchNorm")
        ax.legend(fontsize=7, ncol=2)
    plot = plots.save(fig, ctx.plot_path("O1_gradient_norms.png"))

    rows, vanishes, healthy, nothing_near = [], [], [], []
    for batch_norm in (True, False):
        for depth in depths:
            plain, residual = norms["plain", batch_norm, depth], norms["residual", batch_norm, depth]
            rows.append([depth, "yes" if batch_norm else "no", spread(plain[:, 0]), spread(plain[:, -1]),
                         spread(residual[:, 0]), spread(residual[:, -1])])
        plain_first = norms["plain", batch_norm, near_100][:, 0]
        residual_first = norms["residual", batch_norm, near_100][:, 0]
        vanishes.append(bool(np.all(plain_first <= 1e-10)))
        nothing_near.append(bool(np.all(plain_first > 1e-5)))
        healthy.append(bool(np.all((residual_first >= 1e-4) & (residual_first <= 1))))
    verdict = CONFIRMED if all(vanishes) and all(healthy) else (REFUTED if all(nothing_near) else PARTLY)
    summary = "; ".join(
        f"{'with' if bn else 'without'} BN: plain-{near_100} {spread(norms['plain', bn, near_100][:, 0])}, "
        f"ResNet-{near_100} {spread(norms['residual', bn, near_100][:, 0])}" for bn in (True, False))
    return Outcome(
        verdict=verdict,
        measured=f"first-layer gradient norm at initialization, {summary}",
        rule=f"at the depth nearest 100 ({near_100}): confirmed when the plain net's first layer gets ≤ 1e-10 and "
             "the ResNet's 1e-4…1, with and without BatchNorm; refuted when the plain net's stays above 1e-5 in "
             "both (nothing near 1e-20); partly otherwise",
        setup=f"CIFAR-style plain and residual nets (He et al. 2016 §4.2, option-A shortcuts) of {depths} layers, "
              f"He (fan-out) init, with BatchNorm (batch statistics) or none; cross-entropy on {batch} MNIST "
              f"training images; {len(seeds)} initialization seed(s), mean [min–max]",
        plots=(plot,),
        details=markdown_table(["depth", "BatchNorm", "plain: first layer", "plain: last layer",
                                "ResNet: first layer", "ResNet: last layer"], rows),
    )


def _growth_per_addition(stats, strides_one: list[bool]) -> tuple[float, float]:
    """(geometric-mean growth of E[x²] per stride-1 block, total growth over those blocks)."""
    logs = [math.log(b.second_moment / a.second_moment) for a, b, keep in zip(stats, stats[1:], strides_one[1:])
            if keep]
    return math.exp(sum(logs) / len(logs)), math.exp(sum(logs))


@claim("O5", "He initialization with its variance reduced by √2 keeps the signal's magnitude stable across "
             "residual additions")
def signal_propagation(ctx: Context) -> Outcome:
    depth, seeds, batch = ctx.pick(110, 14), range(ctx.pick(3, 1)), ctx.pick(32, 8)
    images = ctx.cached("mnist", data.mnist).train_images[:batch]
    n = nets.cifar_depth_blocks(depth)
    strides_one = [not (j == 0 and stage > 0) for stage in range(3) for j in range(n)]  # option A halves E[x²] there
    inits = {"He": dict(init="he"), "He/2 (weights ÷ √2)": dict(init="he/2"),
             "He, zero-init last": dict(init="he", zero_init_last=True)}
    moments, growth = {}, {}
    with kernels.use("reference"):
        for kind in ("preact", "residual"):
            for label, options in inits.items():
                model = nets.cifar_net(depth, kind=kind, batch_norm=False, **options)
                per_seed, per_seed_growth = [], []
                for seed in seeds:
                    variables = model.init(jax.random.key(seed), images[:2], train=False)
                    stats = activation_statistics(model, variables, images, train=False,
                                                  select=lambda m: isinstance(m, ResidualBlock))
                    per_seed.append([s.second_moment for s in stats])
                    per_seed_growth.append(_growth_per_addition(stats, strides_one))
                moments[kind, label], growth[kind, label] = np.asarray(per_seed), np.asarray(per_seed_growth)

    fig, axes = plots.subplots(2, width=6)
    for ax, kind in zip(axes, ("preact", "residual")):
        for label in inits:
            plots.band(ax, np.arange(1, 3 * n + 1), moments[kind, label], label)
        ax.set_yscale("log")
        ax.set(xlabel="residual block", ylabel="E[x²] of the block's output",
               title=f"{'pre' if kind == 'preact' else 'post'}-activation ResNet-{depth}, no BatchNorm, at init")
        ax.legend(fontsize=8)
    plot = plots.save(fig, ctx.plot_path("O5_signal_propagation.png"))

    halved, he = growth["preact", "He/2 (weights ÷ √2)"][:, 1], growth["preact", "He"][:, 1]
    stable = bool(np.all((halved >= 0.5) & (halved <= 2)))
    slower = bool(np.all(halved * 10 <= he))
    verdict = CONFIRMED if stable else (PARTLY if slower else REFUTED)
    rows = [[f"{'pre' if kind == 'preact' else 'post'}-activation", label, spread(growth[kind, label][:, 0]),
             spread(growth[kind, label][:, 1])] for kind, label in growth]
    return Outcome(
        verdict=verdict,
        measured="E[x²] growth per residual addition (pre-activation): "
                 + "; ".join(f"{label} ×{spread(growth['preact', label][:, 0])}" for label in inits)
                 + f"; over the {sum(strides_one) - 1} additions He/2 grows ×{spread(halved)}",
        rule="stable means the output's E[x²] changes by at most 2× over all same-width residual additions of the "
             "pre-activation net: confirmed when He/2 is stable, partly when it only grows ≥ 10× less than He, "
             "refuted otherwise",
        setup=f"ResNet-{depth} (CIFAR layout) without BatchNorm, pre- and post-activation blocks, {batch} MNIST "
              f"images, {len(seeds)} seed(s); 'variance reduced by √2' read as He's weights divided by √2 (half "
              "the variance); the stride-2 blocks, whose zero-padded shortcut halves E[x²], are left out of the "
              "growth",
        plots=(plot,),
        details=markdown_table(["blocks", "initialization", "growth per addition", "growth over the net"], rows),
    )


CLAIMS = [gradient_norms, signal_propagation]
