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
from fusionjax.claims.base import (CONFIRMED, PARTLY, REFUTED, Context, Outcome, claim, markdown_table, separated,
                                   spread)
from fusionjax.claims.training import Budget, trained


def _budget(ctx: Context) -> Budget:
    return ctx.pick(Budget(steps=400, batch_size=128, evals=8), Budget(steps=24, batch_size=64, evals=3))


def _seeds(ctx: Context) -> range:
    return range(ctx.pick(3, 1))


def _depths(ctx: Context) -> tuple[int, ...]:
    return ctx.pick((20, 56, 110), (8, 14))


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


def _curves(ax, runs_by_label: dict, metric: str, title: str) -> None:
    """One band per model: the colour says the depth, the line style the family (plain nets dashed)."""
    depths = sorted({int(label.rsplit("-", 1)[1]) for label in runs_by_label})
    for label, runs in runs_by_label.items():  # labels are "<family>-<depth>"
        family, depth = label.rsplit("-", 1)
        style = next((s for prefix, s in _STYLES.items() if family.startswith(prefix)), "-")
        plots.band(ax, runs[0].steps, [getattr(r, metric) for r in runs], label, ls=style,
                   color=f"C{depths.index(int(depth)) % 10}")
    if metric.endswith("error"):  # errors reach 0: linear below one percent, logarithmic above
        ax.set_yscale("symlog", linthresh=0.01)
    else:
        ax.set_yscale("log")
    ax.set(xlabel="step", ylabel=metric.replace("_", " "), title=title)
    ax.legend(fontsize=7)


@claim("O2", "degradation: a 56-layer plain net has higher training error than a 20-layer one, while ResNets keep "
             "improving with depth")
def degradation(ctx: Context) -> Outcome:
    depths = _depths(ctx)
    runs = {f"{kind}-{d}": _runs(ctx, kind, d) for kind in ("plain", "residual") for d in depths}
    loss = {label: _final(r, "train_loss") for label, r in runs.items()}
    shallow, middle = depths[0], depths[1]
    degrades = separated(loss[f"plain-{shallow}"], loss[f"plain-{middle}"])
    residual_means = [loss[f"residual-{d}"].mean() for d in depths]
    improves = all(b <= a for a, b in zip(residual_means, residual_means[1:]))
    verdict = CONFIRMED if degrades and improves else (PARTLY if degrades or improves else REFUTED)
    fig, (left, right) = plots.subplots(2, width=6)
    _curves(left, runs, "train_error", "training error (whole training split)")
    _curves(right, runs, "train_loss", "training loss")
    plot = plots.save(fig, ctx.plot_path("O2_degradation.png"))
    rows = [[label, spread(_final(r, "train_error")), spread(loss[label]), spread(_final(r, "test_error"))]
            for label, r in runs.items()]
    return Outcome(
        verdict=verdict,
        measured="final training loss: " + ", ".join(f"{label} {spread(v)}" for label, v in loss.items()),
        rule=f"degradation holds when every plain-{middle} seed ends with a higher training loss than every "
             f"plain-{shallow} seed; 'ResNets keep improving' when their mean final training loss does not rise "
             "with depth; confirmed when both hold, partly when one does (the loss, not the error, decides: the "
             "error reaches 0 for several nets)",
        setup=_setup(ctx, "the zoo's plain and ResNet CIFAR nets (He et al. 2016 §4.2), one input channel"),
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


@claim("O3", "residual connections make the loss surface smoother (filter-normalized landscapes, Li et al. 2018, "
             "plain-56 vs ResNet-56)")
def landscapes(ctx: Context) -> Outcome:
    depth = _depths(ctx)[1]
    digits = ctx.cached("digits", data.digits)
    points_1d, points_2d, examples = ctx.pick(31, 9), ctx.pick(15, 5), ctx.pick(512, 128)
    line, grid = np.linspace(-1, 1, points_1d), np.linspace(-1, 1, points_2d)
    images, labels = jnp.asarray(digits.train_images[:examples]), jnp.asarray(digits.train_labels[:examples])
    curves, surfaces, stats = {}, {}, {}
    for kind in ("plain", "residual"):
        model = nets.cifar_model(kind, depth)
        for seed, run in enumerate(_runs(ctx, kind, depth)):
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
    seeds = sorted({seed for _, seed in stats})
    nonconvex = {kind: np.asarray([stats[kind, s][0] for s in seeds]) for kind in ("plain", "residual")}
    minima = {kind: np.asarray([stats[kind, s][1] for s in seeds]) for kind in ("plain", "residual")}
    smoother = separated(nonconvex["residual"], nonconvex["plain"])
    verdict = CONFIRMED if smoother else (PARTLY if nonconvex["residual"].mean() < nonconvex["plain"].mean()
                                          else REFUTED)

    fig, axes = plots.subplots(3, width=4.6)
    for kind, style in (("plain", "--"), ("residual", "-")):
        for seed in seeds:
            axes[0].plot(line, curves[kind, seed], style, color="C1" if kind == "plain" else "C0",
                         label=f"{kind}-{depth}" if seed == 0 else None)
    axes[0].set_yscale("log")
    axes[0].set(xlabel="step along a filter-normalized direction", ylabel="training loss", title="1-D")
    axes[0].legend(fontsize=8)
    for ax, kind in zip(axes[1:], ("plain", "residual")):
        contour = ax.contour(grid, grid, np.log10(surfaces[kind, 0]).T, levels=15)
        ax.clabel(contour, fontsize=6)
        ax.set(title=f"{kind}-{depth}, seed 0: log10 loss", xlabel="direction 1", ylabel="direction 2")
    plot = plots.save(fig, ctx.plot_path("O3_landscapes.png"))
    rows = [[f"{kind}-{depth}", spread(nonconvex[kind]), spread(minima[kind]),
             spread([curves[kind, s][points_1d // 2] for s in seeds]),
             spread([curves[kind, s][[0, -1]].mean() for s in seeds])] for kind in ("plain", "residual")]
    return Outcome(
        verdict=verdict,
        measured=f"share of the 2-D surface with marked negative curvature: plain-{depth} "
                 f"{spread(nonconvex['plain'])}, ResNet-{depth} {spread(nonconvex['residual'])}; interior local minima "
                 f"{spread(minima['plain'])} vs {spread(minima['residual'])}",
        rule="at every interior grid point the finite-difference Hessian's eigenvalues; 'marked negative "
             "curvature' is λmin < −0.1·|λmax|. Confirmed when every ResNet seed has a smaller share than every "
             "plain seed, partly when only the mean is smaller, refuted otherwise",
        setup=_setup(ctx, f"O2's trained plain-{depth} and ResNet-{depth}") + f"; loss on {examples} training "
              f"images (evaluation mode) along {points_1d} points of one direction and a {points_2d}×{points_2d} grid of "
              "two, steps in [−1, 1], biases and norm parameters fixed (Li et al.)",
        plots=(plot,),
        details=markdown_table(["model", "share non-convex", "interior local minima", "loss at the weights",
                                "mean loss at ±1 (1-D)"], rows),
    )


@claim("O4", "pre-activation (BN→ReLU→conv) trains better than post-activation")
def preactivation(ctx: Context) -> Outcome:
    depth = ctx.pick(110, 8)
    runs = {f"pre-activation-{depth}": _runs(ctx, "preact", depth),
            f"post-activation-{depth}": _runs(ctx, "residual", depth)}
    pre, post = (_final(r, "train_loss") for r in runs.values())
    verdict = CONFIRMED if separated(pre, post) else (PARTLY if pre.mean() < post.mean() else REFUTED)
    fig, (left, right) = plots.subplots(2, width=6)
    _curves(left, runs, "train_loss", "training loss")
    _curves(right, runs, "test_error", "test error")
    plot = plots.save(fig, ctx.plot_path("O4_preactivation.png"))
    rows = [[label, spread(_final(r, "train_loss")), spread(_final(r, "train_error")), spread(_final(r, "test_error"))]
            for label, r in runs.items()]
    return Outcome(
        verdict=verdict,
        measured=f"final training loss: pre-activation {spread(pre)}, post-activation {spread(post)}",
        rule="confirmed when every pre-activation seed ends with a lower training loss than every post-activation "
             "seed, partly when only the mean is lower, refuted otherwise",
        setup=_setup(ctx, f"ResNet-{depth}: the zoo's post-activation (BasicBlock) and the same net with "
                          "PreActBasicBlock (He et al. 2016b)"),
        plots=(plot,),
        details=markdown_table(["model", "training loss", "training error", "test error"], rows),
    )


@claim("O6", "DenseNet trains to a low training error even at 250 layers")
def deep_densenet(ctx: Context) -> Outcome:
    depth, growth = ctx.pick((250, 12), (16, 4))
    digits = ctx.cached("digits", data.digits)
    seeds = range(1)  # a threshold, not a difference, decides
    dense = trained(ctx, f"densenet_bc_{depth}_{growth}", lambda: nets.densenet_bc(depth, growth), digits,
                    _budget(ctx), seeds)
    deepest = _depths(ctx)[-1]
    runs = {f"densenet_bc_k{growth}-{depth}": dense, f"residual-{deepest}": _runs(ctx, "residual", deepest),
            f"plain-{deepest}": _runs(ctx, "plain", deepest)}
    error = _final(dense, "train_error")
    verdict = CONFIRMED if error.max() <= 0.01 else (PARTLY if error.max() <= 0.05 else REFUTED)
    fig, (left, right) = plots.subplots(2, width=6)
    _curves(left, runs, "train_error", "training error")
    _curves(right, runs, "train_loss", "training loss")
    plot = plots.save(fig, ctx.plot_path("O6_deep_densenet.png"))
    rows = [[label, spread(_final(r, "train_error")), spread(_final(r, "train_loss")), spread(_final(r, "test_error"))]
            for label, r in runs.items()]
    return Outcome(
        verdict=verdict,
        measured=f"DenseNet-BC-{depth} (k={growth}) final training error {spread(error)}, loss "
                 f"{spread(_final(dense, 'train_loss'))}",
        rule="confirmed when the final training error is ≤ 1%, partly when ≤ 5%, refuted above",
        setup=_setup(ctx, f"DenseNet-BC-{depth} (growth rate {growth}; one seed, since a threshold, not a "
                          f"difference, decides) beside O2's ResNet-{deepest} and plain-{deepest} "
                          f"({len(_seeds(ctx))} seeds)", seeds=len(seeds)),
        plots=(plot,),
        details=markdown_table(["model", "training error", "training loss", "test error"], rows),
    )


CLAIMS = [degradation, landscapes, preactivation, deep_densenet]
