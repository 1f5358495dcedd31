"""O1, O5, O8 and O9, what happens at initialization: the gradient reaching each layer of plain, residual and dense
nets, the signal's size after each residual addition, and how the input gradient changes between nearby inputs.
All run in the plain ("reference") kernels: the plain and residual nets op by op, since nets of one family share
layer shapes and each op then compiles once for all depths and seeds; DenseNet-BC as one compiled program, since
each of its layers reads a different number of channels and shares no op's shape."""

import math

import jax
import numpy as np

from fusionjax import kernels
from fusionjax.analysis import activation_statistics, layer_gradient_norms
from fusionjax.blocks import ResidualBlock
from fusionjax.claims import data, nets, plots
from fusionjax.claims.base import (CONFIRMED, PARTLY, REFUTED, Context, Outcome, claim, markdown_table, separated,
                                   spread)

GROWTH_RATE = 12  # DenseNet-BC's k on CIFAR (Huang et al. 2017, Table 2)


def _net(family: str, depth: int, batch_norm: bool):
    """A plain, residual or DenseNet-BC net for one-channel images, with BatchNorm or none."""
    if family == "dense":
        model = nets.densenet_bc(depth, GROWTH_RATE)
        return model if batch_norm else model.clone(norm=nets.NoNorm)
    return nets.cifar_net(depth, kind=family, batch_norm=batch_norm)


def _layer_gradients(ctx: Context, family: str, depth: int, batch_norm: bool, seed: int, batch: int) -> np.ndarray:
    """‖∂loss/∂kernel‖ of every weight layer (input side first) at initialization: cross-entropy on the first
    ``batch`` MNIST training images, BatchNorm with the batch's statistics. Once per run: O1 and O8 share them."""
    def measure():
        mnist = ctx.cached("mnist", data.mnist)
        images, labels = mnist.train_images[:batch], mnist.train_labels[:batch]
        model = _net(family, depth, batch_norm)
        whole = family == "dense"
        with kernels.use("reference"):
            init = jax.jit(model.init, static_argnames="train") if whole else model.init
            variables = init(jax.random.key(seed), images[:2], train=False)
            layers = layer_gradient_norms(model, variables, images, labels, jit=whole)
        return np.asarray([g.grad_norm for g in layers])

    return ctx.cached(("layer gradients", family, depth, batch_norm, seed, batch), measure)


def _o1_sizes(ctx: Context) -> tuple[tuple[int, ...], range, int]:
    """O1's depths, seeds and batch, which O8 reuses for its plain and residual contrast."""
    return ctx.pick((20, 56, 110, 200), (8, 14)), range(ctx.pick(3, 1)), ctx.pick(32, 8)


def decide_vanishing(*, plain_with_bn, plain_without_bn, residual_with_bn, residual_without_bn) -> str:
    """First-layer gradient norms per seed at the depth nearest 100, plain and residual, with BatchNorm and without.
    The verdict is confirmed when every plain seed gets ≤ 1e-10 and every ResNet seed 1e-4…1, with BatchNorm
    and without; refuted when every plain seed stays above 1e-5 in both (nothing near 1e-20); partly otherwise."""
    plain = [np.asarray(plain_with_bn), np.asarray(plain_without_bn)]
    residual = [np.asarray(residual_with_bn), np.asarray(residual_without_bn)]
    if all(np.all(p <= 1e-10) for p in plain) and all(np.all((r >= 1e-4) & (r <= 1)) for r in residual):
        return CONFIRMED
    if all(np.all(p > 1e-5) for p in plain):
        return REFUTED
    return PARTLY


@claim("O1", "gradients vanish in deep plain nets: the first layers of a 100-layer plain net get ~1e-20, a ResNet's "
             "~1e-2", decide=decide_vanishing)
def gradient_norms(ctx: Context) -> Outcome:
    depths, seeds, batch = _o1_sizes(ctx)
    norms = {(kind, batch_norm, depth): np.asarray([_layer_gradients(ctx, kind, depth, batch_norm, seed, batch)
                                                    for seed in seeds])
             for batch_norm in (True, False) for kind in ("plain", "residual") for depth in depths}
    near_100 = min(depths, key=lambda d: abs(d - 100))

    fig, axes = plots.subplots(2, width=6.5)
    for ax, batch_norm in zip(axes, (True, False)):
        for i, depth in enumerate(depths):
            for kind, style in (("plain", "--"), ("residual", "-")):
                values = norms[kind, batch_norm, depth]
                plots.band(ax, np.arange(1, values.shape[1] + 1), values, f"{kind}-{depth}", ls=style, color=f"C{i}")
        ax.set(xlabel="weight layer (input side first)", ylabel="‖∂loss/∂kernel‖",
               title=f"at initialization, {'with' if batch_norm else 'without'} BatchNorm")
        plots.log_axis_with_zero(ax, 1e-24)  # below the claim's 1e-20, so a vanished gradient still shows
        plots.legend_outside(ax, fontsize=7)
    plot = ctx.save_plot(fig, "O1_gradient_norms.png")

    rows = [[depth, "yes" if batch_norm else "no", spread(norms["plain", batch_norm, depth][:, 0]),
             spread(norms["plain", batch_norm, depth][:, -1]), spread(norms["residual", batch_norm, depth][:, 0]),
             spread(norms["residual", batch_norm, depth][:, -1])]
            for batch_norm in (True, False) for depth in depths]
    verdict = decide_vanishing(plain_with_bn=norms["plain", True, near_100][:, 0],
                               plain_without_bn=norms["plain", False, near_100][:, 0],
                               residual_with_bn=norms["residual", True, near_100][:, 0],
                               residual_without_bn=norms["residual", False, near_100][:, 0])
    summary = "; ".join(
        f"{'with' if bn else 'without'} BN: plain-{near_100} {spread(norms['plain', bn, near_100][:, 0])}, "
        f"ResNet-{near_100} {spread(norms['residual', bn, near_100][:, 0])}" for bn in (True, False))
    return Outcome(
        verdict=verdict,
        measured=f"first-layer gradient norm at initialization, {summary}",
        rule=f"at the depth nearest 100 ({near_100}): confirmed when every plain seed's first layer gets ≤ 1e-10 and "
             "every ResNet seed's 1e-4…1, with and without BatchNorm; refuted when every plain seed's stays above "
             "1e-5 in both (nothing near 1e-20); partly otherwise",
        setup=f"CIFAR-style plain and residual nets (He et al. 2016 §4.2, option-A shortcuts) of {depths} layers, "
              f"He (fan-out) init, with BatchNorm (batch statistics) or none; cross-entropy on {batch} MNIST "
              f"training images; {len(seeds)} initialization seed(s), mean [min–max]",
        plots=(plot,),
        details=markdown_table(["depth", "BatchNorm", "plain: first layer", "plain: last layer",
                                "ResNet: first layer", "ResNet: last layer"], rows),
    )


def _growth_over_additions(stats, strides_one: list[bool]) -> list[float]:
    """E[x²] after each residual block over E[x²] after the first, multiplied over stride-1 blocks only."""
    logs = np.cumsum([math.log(b.second_moment / a.second_moment) if keep else 0.0
                      for a, b, keep in zip(stats, stats[1:], strides_one[1:])])
    return [1.0, *np.exp(logs)]


def decide_signal_stability(*, preact_growth, postact_growth) -> str:
    """E[x²]'s growth over all same-width residual additions of the He/2-initialized net, per seed, with pre- and
    with post-activation blocks. Stable means every seed stays within 2× (0.5…2) over the whole net. The verdict
    is confirmed when stable in both, partly when stable in one, refuted when stable in neither."""
    stable = [bool(np.all((np.asarray(g) >= 0.5) & (np.asarray(g) <= 2))) for g in (preact_growth, postact_growth)]
    return CONFIRMED if all(stable) else (PARTLY if any(stable) else REFUTED)


@claim("O5", "He initialization with its variance reduced by √2 keeps the signal's magnitude stable across "
             "residual additions", decide=decide_signal_stability)
def signal_propagation(ctx: Context) -> Outcome:
    depth, seeds, batch = ctx.pick(110, 14), range(ctx.pick(3, 1)), ctx.pick(32, 8)
    images = ctx.cached("mnist", data.mnist).train_images[:batch]
    n = nets.cifar_depth_blocks(depth)
    strides_one = [not (j == 0 and stage > 0) for stage in range(3) for j in range(n)]  # option A halves E[x²] there
    additions = sum(strides_one) - 1
    inits = {"He": dict(init="he"), "He/2 (weights ÷ √2)": dict(init="he/2"),
             "He, zero-init last": dict(init="he", zero_init_last=True)}
    growth = {}  # (kind, label) -> per seed, per block cumulative growth
    with kernels.use("reference"):
        for kind in ("preact", "residual"):
            for label, options in inits.items():
                model = nets.cifar_net(depth, kind=kind, batch_norm=False, **options)
                per_seed = []
                for seed in seeds:
                    variables = model.init(jax.random.key(seed), images[:2], train=False)
                    stats = activation_statistics(model, variables, images, train=False,
                                                  select=lambda m: isinstance(m, ResidualBlock))
                    per_seed.append(_growth_over_additions(stats, strides_one))
                growth[kind, label] = np.asarray(per_seed)

    names = {"preact": "pre-activation", "residual": "post-activation"}
    fig, axes = plots.subplots(2, width=6)
    for ax, kind in zip(axes, names):
        ax.axhspan(0.5, 2, color="0.85", label="stable: within 2×")
        for label in inits:
            plots.band(ax, np.arange(1, 3 * n + 1), growth[kind, label], label)
        ax.set_yscale("log")  # a product of positive moment ratios: never 0
        ax.set(xlabel="residual block", ylabel="E[x²] growth since block 1 (same-width additions)",
               title=f"{names[kind]} ResNet-{depth}, no BatchNorm, at init")
        plots.legend_outside(ax)
    plot = ctx.save_plot(fig, "O5_signal_propagation.png")

    total = {key: values[:, -1] for key, values in growth.items()}
    per_addition = {key: values ** (1 / additions) for key, values in total.items()}
    verdict = decide_signal_stability(preact_growth=total["preact", "He/2 (weights ÷ √2)"],
                                      postact_growth=total["residual", "He/2 (weights ÷ √2)"])
    rows = [[names[kind], label, spread(per_addition[kind, label]), spread(total[kind, label])]
            for kind, label in growth]
    return Outcome(
        verdict=verdict,
        measured=f"E[x²] growth over the {additions} same-width additions with He/2: pre-activation "
                 f"×{spread(total['preact', 'He/2 (weights ÷ √2)'])}, post-activation "
                 f"×{spread(total['residual', 'He/2 (weights ÷ √2)'])} (×"
                 f"{spread(per_addition['preact', 'He/2 (weights ÷ √2)'])} and "
                 f"×{spread(per_addition['residual', 'He/2 (weights ÷ √2)'])} per addition); He "
                 f"×{spread(total['preact', 'He'])} and ×{spread(total['residual', 'He'])}; zero-init last "
                 f"×{spread(total['preact', 'He, zero-init last'])}",
        rule=f"stable means E[x²] after the last block is within 2× (0.5…2) of its value after the first, over the "
             f"{additions} same-width residual additions of ResNet-{depth}, for every seed: confirmed when He/2 is "
             "stable with pre- and with post-activation blocks, partly when with one, refuted when with neither",
        setup=f"ResNet-{depth} (CIFAR layout) without BatchNorm, pre- and post-activation blocks, {batch} MNIST "
              f"images, {len(seeds)} seed(s); 'variance reduced by √2' read as He's weights divided by √2 (half "
              "the variance), the larger of the two readings' reductions (variance ÷ √2 leaves the branches "
              "larger, so the signal can only grow faster); the stride-2 blocks, whose zero-padded shortcut "
              "halves E[x²], are left out of the growth; He with the last layer of each branch zero-initialized "
              "(SkipInit-style scale) as context: its branches start at zero",
        plots=(plot,),
        details=markdown_table(["blocks", "initialization", "growth per addition", "growth over the net"], rows),
    )


def decide_dense_gradient_flow(*, ratio_with_bn, ratio_without_bn) -> str:
    """First-layer over last-layer gradient norm of DenseNet-BC, per depth and seed, with BatchNorm and without.
    Strong flow is every ratio within 10× of 1 (0.1…10). The verdict is confirmed when strong with BatchNorm and
    without, partly when strong in one of them, refuted when strong in neither."""
    strong = [bool(np.all((np.asarray(r) >= 0.1) & (np.asarray(r) <= 10))) for r in (ratio_with_bn, ratio_without_bn)]
    return CONFIRMED if all(strong) else (PARTLY if any(strong) else REFUTED)


@claim("O8", "DenseNet gives strong gradient flow from the last layer to the first (Huang et al. 2017: each layer "
             "has direct access to the gradients from the loss)", decide=decide_dense_gradient_flow)
def dense_gradient_flow(ctx: Context) -> Outcome:
    o1_depths, _, batch = _o1_sizes(ctx)
    seeds = range(1)  # a threshold, not a difference between nets, decides; the contrast nets share O1's seed 0
    dense_depths = ctx.pick((40, 100), (10,))
    contrast = tuple(min(o1_depths, key=lambda d: abs(d - dense)) for dense in dense_depths)  # O1's nearest
    nets_shown = [("dense", d) for d in dense_depths] + [(kind, d) for kind in ("plain", "residual") for d in contrast]
    norms = {(family, depth, batch_norm): np.asarray([_layer_gradients(ctx, family, depth, batch_norm, seed, batch)
                                                      for seed in seeds])
             for family, depth in nets_shown for batch_norm in (True, False)}
    ratio = {key: values[:, 0] / values[:, -1] for key, values in norms.items()}
    names = {"dense": "DenseNet-BC", "plain": "plain", "residual": "ResNet"}

    fig, axes = plots.subplots(2, width=6.5)
    for ax, batch_norm in zip(axes, (True, False)):
        ax.axhspan(0.1, 10, color="0.85", label="strong: within 10×")
        for i, (family, depth) in enumerate(nets_shown):
            values = norms[family, depth, batch_norm]
            position = np.linspace(0, 1, values.shape[1])
            plots.band(ax, position, values / values[:, -1:], f"{names[family]}-{depth}", color=f"C{i}",
                       ls="-" if family == "dense" else "--")
        ax.set(xlabel="weight layer, as a fraction of the depth (input side 0, classifier 1)",
               ylabel="‖∂loss/∂kernel‖ ÷ classifier's",
               title=f"at initialization, {'with' if batch_norm else 'without'} BatchNorm")
        plots.log_axis_with_zero(ax, 1e-24)  # a vanished gradient stays on the plot
        plots.legend_outside(ax, fontsize=7)
    plot = ctx.save_plot(fig, "O8_dense_gradient_flow.png")

    verdict = decide_dense_gradient_flow(ratio_with_bn=np.asarray([ratio["dense", d, True] for d in dense_depths]),
                                         ratio_without_bn=np.asarray([ratio["dense", d, False] for d in dense_depths]))
    rows = [[f"{names[family]}-{depth}", "yes" if batch_norm else "no", spread(norms[family, depth, batch_norm][:, 0]),
             spread(norms[family, depth, batch_norm][:, -1]), spread(ratio[family, depth, batch_norm])]
            for family, depth in nets_shown for batch_norm in (True, False)]
    summary = "; ".join(f"{'with' if bn else 'without'} BN: " + ", ".join(
        f"{names[family]}-{depth} {spread(ratio[family, depth, bn])}" for family, depth in nets_shown)
        for bn in (True, False))
    return Outcome(
        verdict=verdict,
        measured=f"first-layer / classifier gradient norm at initialization, {summary}",
        rule=f"strong flow is a first-layer gradient norm within 10× (0.1…10) of the classifier's for every seed of "
             f"DenseNet-BC at depths {dense_depths}: confirmed when strong with BatchNorm and without, partly when "
             "strong in one, refuted in neither; the plain and residual nets are the contrast, not part of the rule",
        setup=f"DenseNet-BC (Huang et al. 2017: bottleneck layers, compression 0.5, k = {GROWTH_RATE}) of "
              f"{dense_depths} layers beside O1's plain and residual nets of {contrast} layers, with BatchNorm "
              "(batch statistics) or none (the same nets, norm layers removed), default (He fan-out) init; "
              f"cross-entropy on {batch} MNIST training images; {len(seeds)} initialization seed(s), mean [min–max]",
        plots=(plot,),
        details=markdown_table(["net", "BatchNorm", "first layer", "classifier", "first / classifier"], rows),
    )


def neighbour_correlation(gradients: np.ndarray) -> float:
    """Lag-1 autocorrelation of the gradients at consecutive points of a line (first axis), their mean over the
    line removed: Σ⟨gᵢ − ḡ, gᵢ₊₁ − ḡ⟩ / Σ‖gᵢ − ḡ‖². About 0 for white noise, near 1 for a gradient
    that changes smoothly along the line (Balduzzi et al. 2017's white vs brown noise)."""
    g = np.asarray(gradients, np.float64).reshape(len(gradients), -1)
    g = g - g.mean(axis=0)
    return float(np.sum(g[:-1] * g[1:]) / np.sum(g * g))


def _input_gradients(family: str, depth: int, seeds, line: np.ndarray) -> list[np.ndarray]:
    """Per seed, ∂(Σᵢ first logit of xᵢ)/∂xᵢ at every point xᵢ of ``line`` at initialization, BatchNorm with
    the line's statistics (as a training step differentiates): each row is one point's input gradient. One compiled
    program per net serves every seed."""
    model = _net(family, depth, batch_norm=True)

    def gradients(key, x):
        variables = model.init(key, x[:2], train=False)
        return jax.grad(lambda x: model.apply(variables, x, train=True, mutable=["batch_stats"])[0][:, 0].sum())(x)

    with kernels.use("reference"):
        compiled = jax.jit(gradients)
        return [np.asarray(compiled(jax.random.key(seed), line)) for seed in seeds]


def decide_shattering(*, plain_deep, residual_deep) -> str:
    """Neighbour correlation (lag-1 autocorrelation along the line) of the deep plain and residual nets' input
    gradients, per seed. The verdict is confirmed when every plain seed is close to white noise (≤ 0.2) and
    every residual seed stays correlated (≥ 0.5); refuted when the residual net's correlation is not above the
    plain net's for every pair of seeds (no difference to explain); partly otherwise (the residual net's is
    higher, but a threshold is missed)."""
    plain, residual = np.asarray(plain_deep), np.asarray(residual_deep)
    if np.all(plain <= 0.2) and np.all(residual >= 0.5):
        return CONFIRMED
    if not separated(plain, residual):
        return REFUTED
    return PARTLY


@claim("O9", "shattered gradients: a deep plain net's input gradients decorrelate into white noise between nearby "
             "inputs while a residual net's stay correlated, a difference not only of size (Balduzzi et al. 2017)",
       decide=decide_shattering)
def shattered_gradients(ctx: Context) -> Outcome:
    depths = {"plain": ctx.pick((20, 56), (8,)), "residual": ctx.pick((20, 56), (8,)),
              "dense": ctx.pick((22, 58), (10,))}  # DenseNet-BC has 6n+4 layers: the nearest to 6n+2
    seeds, points = range(ctx.pick(2, 1)), ctx.pick(256, 32)
    mnist = ctx.cached("mnist pooled", lambda: ctx.cached("mnist", data.mnist).downsampled(2))
    start = mnist.train_images[0]
    end = mnist.train_images[np.flatnonzero(mnist.train_labels != mnist.train_labels[0])[0]]
    t = np.linspace(0, 1, points, dtype=np.float32)[:, None, None, None]
    line = (1 - t) * start + t * end
    correlation, norm, trace = {}, {}, {}
    projection = np.random.default_rng(0).standard_normal(start.size)  # one fixed direction to draw the gradient
    for family, family_depths in depths.items():
        for depth in family_depths:
            per_seed = _input_gradients(family, depth, seeds, line)
            correlation[family, depth] = np.asarray([neighbour_correlation(g) for g in per_seed])
            norm[family, depth] = np.asarray([np.linalg.norm(g.reshape(points, -1), axis=1).mean() for g in per_seed])
            drawn = per_seed[0].reshape(points, -1) @ projection
            trace[family, depth] = drawn / np.abs(drawn).max()
    names = {"plain": "plain", "residual": "ResNet", "dense": "DenseNet-BC"}

    fig, axes = plots.subplots(3, width=5)
    for i, family in enumerate(depths):
        deep = depths[family][-1]
        axes[0].plot(t.ravel(), trace[family, deep] + 2.2 * i, color=f"C{i}", lw=0.8, label=f"{names[family]}-{deep}")
        for ax, values in zip(axes[1:], (correlation, norm)):
            plots.points_with_range(ax, depths[family], [values[family, d] for d in depths[family]],
                                    names[family], color=f"C{i}")
    axes[0].set(xlabel="position between two MNIST images", yticks=[],
                ylabel="∂logit/∂x · a fixed direction", title="seed 0, deepest nets")
    axes[1].axhline(0.2, color="0.5", ls=":", label="white-noise bound 0.2")
    axes[1].axhline(0.5, color="0.5", ls="--", label="correlated from 0.5")
    axes[1].set(xlabel="depth (layers)", ylabel="neighbour correlation", ylim=(-0.2, 1.05),
                title="lag-1 autocorrelation along the line")
    axes[2].set(xlabel="depth (layers)", ylabel="mean ‖∂logit/∂x‖", title="gradient size")
    plots.log_axis_with_zero(axes[2], 1e-12)  # a gradient that vanished stays on the plot
    for ax in axes:
        plots.legend_outside(ax)
    plot = ctx.save_plot(fig, "O9_shattered_gradients.png")

    shallow, deep = depths["plain"][0], depths["plain"][-1]
    verdict = decide_shattering(plain_deep=correlation["plain", deep], residual_deep=correlation["residual", deep])
    rows = [[f"{names[family]}-{depth}", spread(correlation[family, depth]), spread(norm[family, depth])]
            for family in depths for depth in depths[family]]
    return Outcome(
        verdict=verdict,
        measured=f"neighbour correlation of input gradients: plain-{deep} {spread(correlation['plain', deep])}, "
                 f"ResNet-{deep} {spread(correlation['residual', deep])}, DenseNet-BC-{depths['dense'][-1]} "
                 f"{spread(correlation['dense', depths['dense'][-1]])} (at {shallow}/{depths['dense'][0]} layers: "
                 + ", ".join(f"{names[f]} {spread(correlation[f, depths[f][0]])}" for f in depths)
                 + f"); mean gradient norm plain-{deep} {spread(norm['plain', deep])}, ResNet-{deep} "
                 f"{spread(norm['residual', deep])}",
        rule=f"at {deep} layers, per seed: confirmed when the plain net's neighbour correlation is ≤ 0.2 (white "
             "noise has 0) and the ResNet's ≥ 0.5; refuted when the ResNet's is not above the plain net's for "
             "every pair of seeds; partly otherwise. DenseNet-BC and the shallow nets are context",
        setup=f"plain, residual (CIFAR layout, option-A shortcuts) and DenseNet-BC (k = {GROWTH_RATE}) nets of "
              f"{depths['plain']}, {depths['plain']} and {depths['dense']} layers with BatchNorm (the line's batch "
              f"statistics), at initialization; {points} points on the straight line between two MNIST training "
              "images of different classes; the gradient of the summed first logit with respect to each point; "
              f"{len(seeds)} seed(s), mean [min–max]; MNIST 2×2-pooled to 14×14, so that the {points}-point line "
              "passes through the deepest DenseNet-BC as one batch within the claims' time. Balduzzi et al. 2017 "
              "(ICML, 'The shattered gradients problem') "
              "show on a 1-D input grid of 256 points that a deep feedforward net's gradient looks like white "
              "noise and a resnet's like brown noise (Figure 1), with correlations decaying as 2^−L and as 1/√L "
              "(resnets with BatchNorm)",
        plots=(plot,),
        details=markdown_table(["net", "neighbour correlation", "mean ‖∂logit/∂x‖"], rows),
    )


CLAIMS = [gradient_norms, signal_propagation, dense_gradient_flow, shattered_gradients]
