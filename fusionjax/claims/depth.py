"""O2, O3, O4 and O6, training deep networks on scikit-learn's digits: degradation of plain nets, the loss
landscape around the weights they reach, pre- vs post-activation, and a 250-layer DenseNet.

Every run uses the same budget, so depths and families compare at equal cost in steps; the runs are shared
(O3 and O4 reuse O2's models), one compiled step per architecture serving every seed.
"""

import jax
import jax.numpy as jnp
import numpy as np

from fusionjax.analysis import filter_normalized_direction, loss_landscape
from fusionjax.analysis.gradients import cross_entropy
from fusionjax.claims import data, nets, plots
from fusionjax.claims.base import (CONFIRMED, NOT_MEASURABLE, PARTLY, REFUTED, Context, Outcome, claim,
                                   markdown_table, separated, spread)
from fusionjax.claims.training import Budget, trained


def _budget(ctx: Context) -> Budget:
    return ctx.pick(Budget(steps=400, batch_size=64, evals=8), Budget(steps=24, batch_size=64, evals=3))


def _seeds(ctx: Context) -> range:
    return range(ctx.pick(3, 1))


def _depths(ctx: Context) -> tuple[int, ...]:
    """The ResNets' depths."""
    return ctx.pick((20, 56, 110), (8, 14))


def _plain_depths(ctx: Context) -> tuple[int, ...]:
    """The plain nets' depths: the two the degradation claim names (a 110-layer one would double their cost)."""
    return ctx.pick((20, 56), (8, 14))


def _runs(ctx: Context, kind: str, depth: int):
    digits = ctx.cached("digits", data.digits)
    return trained(ctx, f"{kind}{depth}", lambda: nets.cifar_model(kind, depth), digits, _budget(ctx), _seeds(ctx))


def _setup(ctx: Context, models: str, seeds: int | None = None) -> str:
    digits = ctx.cached("digits", data.digits)
    seeds = len(_seeds(ctx)) if seeds is None else seeds
    return (f"{models} on {digits.describe()}; {_budget(ctx).describe()}; {seeds} seed(s) (initialization and "
            "batch order), mean [min–max]; no augmentation")


def _final(runs, metric: str) -> np.ndarray:
    return np.asarray([getattr(r, metric)[-1] for r in runs])


_STYLES = {"plain": "--", "residual": "-", "pre-activation": ":", "post-activation": "-", "densenet_bc": "-."}
# Below these, a log axis turns linear so that zeros stay on the plot: one training image is 1/1,437 ≈ 7e-4 of the
# error, and the lowest training losses after the budget are about 1e-4.
_FLOORS = {"error": 1e-3, "loss": 1e-5}


def _curves(ax, runs_by_label: dict, metric: str, title: str) -> None:
    """One band per model: the colour says the depth, the line style the family (plain nets dashed)."""
    depths = sorted({int(label.rsplit("-", 1)[1]) for label in runs_by_label})
    for label, runs in runs_by_label.items():  # labels are "<family>-<depth>"
        family, depth = label.rsplit("-", 1)
        style = next((s for prefix, s in _STYLES.items() if family.startswith(prefix)), "-")
        plots.band(ax, runs[0].steps, [getattr(r, metric) for r in runs], label, ls=style,
                   color=f"C{depths.index(int(depth)) % 10}")
    ax.set(xlabel="step", ylabel=metric.replace("train_", "training ").replace("_", " "), title=title)
    plots.log_axis_with_zero(ax, _FLOORS[metric.rsplit("_", 1)[1]])


def _depth_steps(errors_by_depth: np.ndarray) -> list[str]:
    """From each depth to the next: 'better' when every seed of the deeper net is below every seed of the
    shallower one, 'worse' when every seed is above, else 'within seed noise'."""
    return ["better" if separated(deeper, shallower) else "worse" if separated(shallower, deeper)
            else "within seed noise" for shallower, deeper in zip(errors_by_depth, errors_by_depth[1:])]


def decide_degradation(plain_shallow_train_error, plain_deeper_train_error, residual_test_error) -> str:
    """Two halves, each decided on a number that is not saturated.

    Plain nets, on the training error (the claim's words): degradation holds when every seed of the deeper plain
    net ends with a higher training error than every seed of the shallower one, fails otherwise, and is not
    tested when every seed of both reaches zero training error. ResNets, on the test error (``residual_test_error``:
    depths × seeds, shallowest first), as He et al. 2016 measure 'improving with depth' since all their ResNets
    reach near-zero training error: at each step in depth every seed of the deeper net below every seed of the
    shallower one is an improvement, every seed above a worsening, anything else no change within seed noise; the
    half holds when every step improves and fails when any step worsens.
    The verdict: confirmed when both halves hold, partly when one holds, refuted when neither holds and one fails,
    not measurable here when neither is settled (the plain half not tested, the ResNets' test errors within seed
    noise).
    """
    shallow, deeper = np.asarray(plain_shallow_train_error), np.asarray(plain_deeper_train_error)
    plain = separated(shallow, deeper) if shallow.any() or deeper.any() else None  # None: not tested
    steps = _depth_steps(np.asarray(residual_test_error))
    residual = False if "worse" in steps else (True if set(steps) == {"better"} else None)  # None: not settled
    halves = (plain, residual)
    if all(halves):
        return CONFIRMED
    if any(halves):
        return PARTLY
    return REFUTED if False in halves else NOT_MEASURABLE


@claim("O2", "degradation: a 56-layer plain net has higher training error than a 20-layer one, while ResNets keep "
             "improving with depth", decide=decide_degradation)
def degradation(ctx: Context) -> Outcome:
    depths, plain_depths = _depths(ctx), _plain_depths(ctx)
    runs = {**{f"plain-{d}": _runs(ctx, "plain", d) for d in plain_depths},
            **{f"residual-{d}": _runs(ctx, "residual", d) for d in depths}}
    train_error = {label: _final(r, "train_error") for label, r in runs.items()}
    test_error = {label: _final(r, "test_error") for label, r in runs.items()}
    shallow, deep = plain_depths
    residual_test = np.stack([test_error[f"residual-{d}"] for d in depths])
    verdict = decide_degradation(plain_shallow_train_error=train_error[f"plain-{shallow}"],
                                 plain_deeper_train_error=train_error[f"plain-{deep}"],
                                 residual_test_error=residual_test)
    fig, axes = plots.subplots(3, width=4.4)
    _curves(axes[0], runs, "train_error", "training error (whole training split)")
    _curves(axes[1], runs, "train_loss", "training loss")
    plots.legend_outside(axes[1], fontsize=7)
    for kind, kind_depths, style in (("plain", plain_depths, "--"), ("residual", depths, "-")):
        plots.points_with_range(axes[2], kind_depths, [test_error[f"{kind}-{d}"] for d in kind_depths], kind, ls=style)
    axes[2].set(xlabel="layers", ylabel="final test error", title="test error by depth", xticks=depths)
    plots.log_axis_with_zero(axes[2], _FLOORS["error"])
    plots.legend_outside(axes[2], fontsize=7)
    plot = ctx.save_plot(fig, "O2_degradation.png")
    rows = [[label, spread(train_error[label]), spread(_final(r, "train_loss")), spread(test_error[label])]
            for label, r in runs.items()]
    steps = ", ".join(f"{a}→{b} {word}" for a, b, word in zip(depths, depths[1:], _depth_steps(residual_test)))
    return Outcome(
        verdict=verdict,
        measured=f"final training error plain-{shallow} {spread(train_error[f'plain-{shallow}'])}, plain-{deep} "
                 f"{spread(train_error[f'plain-{deep}'])}; ResNet test error "
                 + ", ".join(f"{d} layers {spread(test_error[f'residual-{d}'])}" for d in depths) + f" ({steps})",
        rule=f"plain half: holds when every plain-{deep} seed ends with a higher training error than every "
             f"plain-{shallow} seed, fails otherwise, not tested when all of them end at 0; ResNet half, on the test "
             "error as He et al. measure it (their ResNets all reach a low training error): at each step "
             f"{' → '.join(map(str, depths))} layers 'better' when every seed of the deeper net is below every seed "
             "of the shallower one, 'worse' when every seed is above, else within seed noise; holds when every step "
             "is better, fails when one is worse. Confirmed when both halves hold, partly when one does, refuted "
             "when neither holds and one fails, not measurable here when neither is settled",
        setup=_setup(ctx, f"the zoo's plain ({', '.join(map(str, plain_depths))} layers) and ResNet "
                          f"({', '.join(map(str, depths))} layers) CIFAR nets (He et al. 2016 §4.2), one input "
                          "channel")
              + "; He et al. 2016 (Table 6, CIFAR-10) report ResNet test errors of 8.75% (20 layers), 6.97% (56) "
                "and 6.43% (110), all trained to a low training error (their Fig. 6)",
        plots=(plot,),
        details=markdown_table(["model", "training error", "training loss", "test error"], rows),
    )


def _curvature_statistics(surface: np.ndarray, step: float) -> tuple[float, int]:
    """(fraction of interior grid points with marked negative curvature, number of interior local minima)."""
    s = surface
    fxx = (s[2:, 1:-1] - 2 * s[1:-1, 1:-1] + s[:-2, 1:-1]) / step**2
    fyy = (s[1:-1, 2:] - 2 * s[1:-1, 1:-1] + s[1:-1, :-2]) / step**2
    fxy = (s[2:, 2:] - s[2:, :-2] - s[:-2, 2:] + s[:-2, :-2]) / (4 * step**2)
    half_trace, radius = (fxx + fyy) / 2, np.sqrt(((fxx - fyy) / 2) ** 2 + fxy**2)
    largest, smallest = half_trace + radius, half_trace - radius
    nonconvex = smallest < -0.1 * np.abs(largest)  # Li et al. map |λmin/λmax|; 10% marks real concavity
    centre = s[1:-1, 1:-1]
    neighbours = [s[1 + i:s.shape[0] - 1 + i, 1 + j:s.shape[1] - 1 + j]
                  for i in (-1, 0, 1) for j in (-1, 0, 1) if (i, j) != (0, 0)]
    minima = np.logical_and.reduce([centre < n for n in neighbours])
    return float(nonconvex.mean()), int(minima.sum())


# Li et al. draw landscapes around trained minimizers: a net whose training loss is above this is not at one.
MINIMUM_LOSS = 0.01


def decide_landscapes(plain_train_loss, residual_train_loss, plain_centre_lowest, residual_centre_lowest,
                      plain_nonconvex, residual_nonconvex) -> str:
    """Li et al. 2018 compare landscapes around minimizers, so both nets must be at one: every seed's final
    training loss at most ``MINIMUM_LOSS`` and its trained weights the lowest point of its 1-D slice
    (``*_centre_lowest``, per seed); if not, not measurable here. At minima, on the share of the 2-D surface with
    marked negative curvature (``*_nonconvex``, per seed): confirmed when every ResNet seed has a smaller share than
    every plain seed, partly when only the mean is smaller, refuted otherwise.
    """
    at_minimum = [np.max(loss) <= MINIMUM_LOSS and np.all(lowest) for loss, lowest in
                  ((plain_train_loss, plain_centre_lowest), (residual_train_loss, residual_centre_lowest))]
    if not all(at_minimum):
        return NOT_MEASURABLE
    if separated(residual_nonconvex, plain_nonconvex):
        return CONFIRMED
    return PARTLY if np.mean(residual_nonconvex) < np.mean(plain_nonconvex) else REFUTED


@claim("O3", "residual connections make the loss surface smoother (filter-normalized landscapes, Li et al. 2018, "
             "plain-56 vs ResNet-56)", decide=decide_landscapes)
def landscapes(ctx: Context) -> Outcome:
    depth = _depths(ctx)[1]
    digits = ctx.cached("digits", data.digits)
    points_1d, points_2d, examples = ctx.pick(31, 9), ctx.pick(15, 5), ctx.pick(256, 128)
    reach = 1.0  # steps in [−reach, reach] along each filter-normalized direction, as Li et al.
    line, grid = np.linspace(-reach, reach, points_1d), np.linspace(-reach, reach, points_2d)
    images, labels = jnp.asarray(digits.train_images[:examples]), jnp.asarray(digits.train_labels[:examples])
    kinds = ("plain", "residual")
    runs = {kind: _runs(ctx, kind, depth) for kind in kinds}
    curves, surfaces, stats = {}, {}, {}
    for kind in kinds:
        model = nets.cifar_model(kind, depth)
        for seed, run in enumerate(runs[kind]):
            batch_stats = run.variables["batch_stats"]

            def loss_fn(params, model=model, batch_stats=batch_stats):
                logits = model.apply({"params": params, "batch_stats": batch_stats}, images, train=False)
                return cross_entropy(logits, labels)

            params = run.variables["params"]
            keys = jax.random.split(jax.random.key(1000 + seed), 3)
            d1, d2, d3 = (filter_normalized_direction(k, params) for k in keys)
            curves[kind, seed] = loss_landscape(loss_fn, params, [d1], [line])
            surfaces[kind, seed] = loss_landscape(loss_fn, params, [d2, d3], [grid, grid])
            stats[kind, seed] = _curvature_statistics(surfaces[kind, seed], grid[1] - grid[0])
    seeds = range(len(runs["plain"]))
    nonconvex = {kind: np.asarray([stats[kind, s][0] for s in seeds]) for kind in kinds}
    minima = {kind: np.asarray([stats[kind, s][1] for s in seeds]) for kind in kinds}
    train_loss = {kind: _final(runs[kind], "train_loss") for kind in kinds}
    centre_lowest = {kind: np.asarray([np.argmin(curves[kind, s]) == points_1d // 2 for s in seeds]) for kind in kinds}
    verdict = decide_landscapes(plain_train_loss=train_loss["plain"], residual_train_loss=train_loss["residual"],
                                plain_centre_lowest=centre_lowest["plain"],
                                residual_centre_lowest=centre_lowest["residual"],
                                plain_nonconvex=nonconvex["plain"], residual_nonconvex=nonconvex["residual"])

    fig, axes = plots.subplots(3, width=4.6)
    for kind, style in (("plain", "--"), ("residual", "-")):
        for seed in seeds:
            axes[0].plot(line, curves[kind, seed], style, color="C1" if kind == "plain" else "C0",
                         label=f"{kind}-{depth}" if seed == 0 else None)
    axes[0].set(xlabel="step along a filter-normalized direction", ylabel="training loss", title="1-D, every seed")
    plots.log_axis_with_zero(axes[0], _FLOORS["loss"])
    axes[0].legend(fontsize=8, loc="upper center")
    for ax, kind in zip(axes[1:], kinds):
        contour = ax.contour(grid, grid, np.log10(surfaces[kind, 0]).T, levels=15)
        ax.clabel(contour, fontsize=6)
        ax.set(title=f"{kind}-{depth}, seed 0: log10 loss", xlabel="direction 1", ylabel="direction 2")
    plot = ctx.save_plot(fig, "O3_landscapes.png")
    rows = [[f"{kind}-{depth}", spread(train_loss[kind]), f"{int(centre_lowest[kind].sum())} of {len(seeds)}",
             spread(nonconvex[kind]), spread(minima[kind]), spread([curves[kind, s][[0, -1]].mean() for s in seeds])]
            for kind in kinds]
    at_minimum = ", ".join(f"{kind}-{depth} training loss {spread(train_loss[kind])}, trained weights lowest on the "
                           f"1-D slice for {int(centre_lowest[kind].sum())} of {len(seeds)} seeds" for kind in kinds)
    return Outcome(
        verdict=verdict,
        measured=f"{at_minimum}; share of the 2-D surface with marked negative curvature: plain-{depth} "
                 f"{spread(nonconvex['plain'])}, ResNet-{depth} {spread(nonconvex['residual'])}",
        rule=f"both nets must be at a minimum (every seed's final training loss ≤ {MINIMUM_LOSS:g} and its trained "
             f"weights the lowest of the {points_1d} points of its 1-D slice), else not measurable here; then at "
             "every interior point of the 2-D grid the finite-difference Hessian's eigenvalues, 'marked negative "
             "curvature' being λmin < −0.1·|λmax|: confirmed when every ResNet seed has a smaller share of it "
             "than every plain seed, partly when only the mean is smaller, refuted otherwise",
        setup=_setup(ctx, f"O2's trained plain-{depth} and ResNet-{depth}") + f"; loss on the first {examples} of "
              f"the {len(digits.train_labels):,} training images (evaluation mode) along {points_1d} points of one "
              f"filter-normalized direction and a {points_2d}×{points_2d} grid of two, steps in [−{reach:g}, "
              f"{reach:g}], biases and norm parameters fixed (Li et al. 2018, 'Visualizing the loss landscape of "
              "neural nets', ResNet-56 with and without shortcuts)",
        plots=(plot,),
        details=markdown_table(["model", "final training loss", "weights lowest on the 1-D slice",
                                "share non-convex", "interior local minima", "mean loss at ±1 (1-D)"], rows),
    )


def decide_preactivation(pre_train_loss, post_train_loss, pre_train_error, post_train_error) -> str:
    """'Trains better' read on the final training loss, per seed. When every seed of both nets reaches zero
    training error, both have fit the training split and their losses differ by how far weight decay lets the
    logits grow, not by how well they train: not measurable here. Otherwise confirmed when every pre-activation
    seed ends with a lower training loss than every post-activation seed, partly when only the mean is lower,
    refuted otherwise.
    """
    if not np.any(pre_train_error) and not np.any(post_train_error):
        return NOT_MEASURABLE
    if separated(pre_train_loss, post_train_loss):
        return CONFIRMED
    return PARTLY if np.mean(pre_train_loss) < np.mean(post_train_loss) else REFUTED


@claim("O4", "pre-activation (BN→ReLU→conv) trains better than post-activation", decide=decide_preactivation)
def preactivation(ctx: Context) -> Outcome:
    depth = ctx.pick(110, 8)
    runs = {f"pre-activation-{depth}": _runs(ctx, "preact", depth),
            f"post-activation-{depth}": _runs(ctx, "residual", depth)}
    (pre_loss, post_loss), (pre_error, post_error) = ([_final(r, metric) for r in runs.values()]
                                                      for metric in ("train_loss", "train_error"))
    verdict = decide_preactivation(pre_train_loss=pre_loss, post_train_loss=post_loss, pre_train_error=pre_error,
                                   post_train_error=post_error)
    fig, (left, right) = plots.subplots(2, width=5)
    _curves(left, runs, "train_loss", "training loss")
    _curves(right, runs, "test_error", "test error")
    plots.legend_outside(right)
    plot = ctx.save_plot(fig, "O4_preactivation.png")
    rows = [[label, spread(_final(r, "train_loss")), spread(_final(r, "train_error")), spread(_final(r, "test_error"))]
            for label, r in runs.items()]
    return Outcome(
        verdict=verdict,
        measured=f"final training loss: pre-activation {spread(pre_loss)}, post-activation {spread(post_loss)}; "
                 f"training error {spread(pre_error)} vs {spread(post_error)}",
        rule="not measurable here when every seed of both nets ends at zero training error; otherwise confirmed "
             "when every pre-activation seed ends with a lower training loss than every post-activation seed, "
             "partly when only the mean is lower, refuted otherwise",
        setup=_setup(ctx, f"ResNet-{depth}: the zoo's post-activation (BasicBlock) and the same net with "
                          "PreActBasicBlock (He et al. 2016b, 'Identity mappings in deep residual networks')"),
        plots=(plot,),
        details=markdown_table(["model", "training loss", "training error", "test error"], rows),
    )


# 'Low' training error: all but 1 in 100 training images fit; up to 1 in 20 is partly low.
LOW_TRAINING_ERROR, FAIR_TRAINING_ERROR = 0.01, 0.05


def decide_deep_densenet(train_error) -> str:
    """On the final training error of every seed: confirmed when the highest is at most ``LOW_TRAINING_ERROR``
    (1%), partly when at most ``FAIR_TRAINING_ERROR`` (5%), refuted above."""
    worst = float(np.max(train_error))
    return CONFIRMED if worst <= LOW_TRAINING_ERROR else (PARTLY if worst <= FAIR_TRAINING_ERROR else REFUTED)


@claim("O6", "DenseNet trains to a low training error even at 250 layers", decide=decide_deep_densenet)
def deep_densenet(ctx: Context) -> Outcome:
    # Depth is what the claim is about; a growth rate of 6 keeps 250 layers at about twice ResNet-110's FLOPs
    # (12 would be eight times).
    depth, growth = ctx.pick((250, 6), (16, 4))
    digits = ctx.cached("digits", data.digits)
    seeds = range(1)  # a threshold, not a difference, decides
    dense = trained(ctx, f"densenet_bc_{depth}_{growth}", lambda: nets.densenet_bc(depth, growth), digits,
                    _budget(ctx), seeds)
    deepest, deepest_plain = _depths(ctx)[-1], _plain_depths(ctx)[-1]
    runs = {f"densenet_bc_k{growth}-{depth}": dense, f"residual-{deepest}": _runs(ctx, "residual", deepest),
            f"plain-{deepest_plain}": _runs(ctx, "plain", deepest_plain)}
    error = _final(dense, "train_error")
    verdict = decide_deep_densenet(train_error=error)
    fig, (left, right) = plots.subplots(2, width=5)
    _curves(left, runs, "train_error", "training error")
    _curves(right, runs, "train_loss", "training loss")
    plots.legend_outside(right)
    plot = ctx.save_plot(fig, "O6_deep_densenet.png")
    rows = [[label, spread(_final(r, "train_error")), spread(_final(r, "train_loss")), spread(_final(r, "test_error"))]
            for label, r in runs.items()]
    return Outcome(
        verdict=verdict,
        measured=f"DenseNet-BC-{depth} (k={growth}) final training error {spread(error)}, loss "
                 f"{spread(_final(dense, 'train_loss'))}",
        rule=f"confirmed when the final training error is ≤ {LOW_TRAINING_ERROR:.0%}, partly when ≤ "
             f"{FAIR_TRAINING_ERROR:.0%}, refuted above",
        setup=_setup(ctx, f"DenseNet-BC-{depth} (growth rate {growth}; Huang et al. 2017 train L = 250 at k = 24, "
                          f"their Table 2; one seed, since a threshold, not a difference, decides) beside O2's "
                          f"ResNet-{deepest} and plain-{deepest_plain} ({len(_seeds(ctx))} seeds)", seeds=len(seeds)),
        plots=(plot,),
        details=markdown_table(["model", "training error", "training loss", "test error"], rows),
    )


CLAIMS = [degradation, landscapes, preactivation, deep_densenet]
