"""O7 and P5, DenseNet against ResNet: on the 5,000 MNIST images, accuracy against training-set size at a
matched parameter count (O7) and the parameters each family needs for one accuracy (context for P5); on ImageNet,
the same question from torchvision's published top-1 and parameters (P5's verdict).

Images are 2×2-pooled to 14×14 (a quarter of the compute per layer; the digits stay legible); every run takes
the same number of steps whatever the training-set size, and is evaluated on the same 1,000 test images.
"""

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from fusionjax.analysis import parameter_count
from fusionjax.claims import data, nets, plots
from fusionjax.claims.base import (CONFIRMED, PARTLY, REFUTED, Context, Outcome, claim, markdown_table, separated,
                                   spread)
from fusionjax.claims.counting import TORCHVISION
from fusionjax.claims.training import Budget, trained


def mnist_14(ctx: Context) -> data.Dataset:
    return ctx.cached("mnist 14×14", lambda: ctx.cached("mnist", data.mnist).downsampled(2))


def _budget(ctx: Context) -> Budget:
    return ctx.pick(Budget(steps=400, batch_size=64, evals=4), Budget(steps=20, batch_size=32, evals=1))


def _seeds(ctx: Context) -> range:
    return range(ctx.pick(3, 1))


def families(ctx: Context) -> dict[str, dict[str, Callable]]:
    """ResNets and DenseNet-BCs by size; the last of each family is the pair matched in parameters."""
    return ctx.pick(
        {"ResNet": {"resnet8": lambda: nets.cifar_model("residual", 8),
                    "resnet14": lambda: nets.cifar_model("residual", 14),
                    "resnet20": lambda: nets.cifar_model("residual", 20)},
         "DenseNet-BC": {"densenet_bc_16_12": lambda: nets.densenet_bc(16, 12),
                         "densenet_bc_28_12": lambda: nets.densenet_bc(28, 12),
                         "densenet_bc_52_12": lambda: nets.densenet_bc(52, 12)}},
        {"ResNet": {"resnet8": lambda: nets.cifar_model("residual", 8)},
         "DenseNet-BC": {"densenet_bc_22_12": lambda: nets.densenet_bc(22, 12)}})


def runs(ctx: Context, label: str, build, size: int | None = None):
    """The runs of one model on MNIST 14×14, all 4,000 training images or a class-balanced subset per seed."""
    full = mnist_14(ctx)
    return [trained(ctx, label, build, full if size is None else full.subset(size, seed), _budget(ctx), [seed])[0]
            for seed in _seeds(ctx)]


def _accuracy(model_runs) -> np.ndarray:
    return 1 - np.asarray([r.test_error[-1] for r in model_runs])


def _parameters(build, shape) -> int:
    model = build()
    return parameter_count(jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, *shape)))["params"])


def _setup(ctx: Context, models: str) -> str:
    return (f"{models}; {mnist_14(ctx).describe()}; {_budget(ctx).describe()}; {len(_seeds(ctx))} seed(s) "
            "(initialization, batch order and subset), mean [min–max]")


def decide_small_data(resnet_smallest, densenet_smallest, gaps) -> str:
    """Per-seed test accuracies of the ResNet and the DenseNet at the smallest training set, and the mean
    DenseNet − ResNet gap at each size (smallest first). The verdict is refuted when DenseNet is not ahead at the
    smallest size; confirmed when every DenseNet seed beats every ResNet seed there and the gap there is larger
    than at the largest size; partly otherwise."""
    if gaps[0] <= 0:
        return REFUTED
    return CONFIRMED if separated(resnet_smallest, densenet_smallest) and gaps[0] > gaps[-1] else PARTLY


@claim("O7", "DenseNet suits small data sets better: its accuracy advantage over a ResNet of similar size is "
             "largest with the fewest training images", decide=decide_small_data)
def small_data(ctx: Context) -> Outcome:
    sizes = ctx.pick((100, 300, 1000, 4000), (100, 300))
    (res_label, res_build), = list(families(ctx)["ResNet"].items())[-1:]
    (dense_label, dense_build), = list(families(ctx)["DenseNet-BC"].items())[-1:]
    shape = mnist_14(ctx).image_shape
    params = {res_label: _parameters(res_build, shape), dense_label: _parameters(dense_build, shape)}
    accuracy = {(label, n): _accuracy(runs(ctx, label, build, None if n == len(mnist_14(ctx).train_labels) else n))
                for label, build in ((res_label, res_build), (dense_label, dense_build)) for n in sizes}
    gaps = [accuracy[dense_label, n].mean() - accuracy[res_label, n].mean() for n in sizes]
    verdict = decide_small_data(resnet_smallest=accuracy[res_label, sizes[0]],
                                densenet_smallest=accuracy[dense_label, sizes[0]], gaps=np.asarray(gaps))
    fig, (left, right) = plots.subplots(2, width=6)
    for label in (res_label, dense_label):
        plots.points_with_range(left, sizes, [accuracy[label, n] for n in sizes],
                                f"{label} ({params[label] / 1e3:.0f}k params)")
    plots.log_axis_ticks(left, sizes, [f"{n:,}" for n in sizes])
    left.set(xlabel="training images", ylabel="test accuracy", title="MNIST 14×14, same number of steps")
    plots.legend_outside(left)
    right.plot(sizes, np.asarray(gaps) * 100, "o-")
    right.axhline(0, color="k", lw=0.5)
    plots.log_axis_ticks(right, sizes, [f"{n:,}" for n in sizes])
    right.set(xlabel="training images", ylabel="DenseNet − ResNet (accuracy points)", title="advantage of concat")
    plot = ctx.save_plot(fig, "O7_small_data.png")
    rows = [[n, spread(accuracy[res_label, n]), spread(accuracy[dense_label, n]), f"{gap * 100:+.2f}"]
            for n, gap in zip(sizes, gaps)]
    return Outcome(
        verdict=verdict,
        measured=f"{dense_label} − {res_label} test accuracy: "
                 + ", ".join(f"{gap * 100:+.2f} points at {n}" for n, gap in zip(sizes, gaps)),
        rule="refuted when DenseNet is not ahead at the smallest size; confirmed when every DenseNet seed beats "
             "every ResNet seed there and the advantage is larger than at the largest size; partly otherwise",
        setup=_setup(ctx, f"{res_label} ({params[res_label]:,} parameters) vs {dense_label} "
                          f"({params[dense_label]:,}) on class-balanced subsets"),
        plots=(plot,),
        details=markdown_table(["training images", res_label, dense_label, "difference (points)"], rows),
    )


def _imagenet_matches() -> list[tuple[str, str | None, float | None]]:
    """For each torchvision ResNet, the smallest torchvision DenseNet at least as accurate, and its share of the
    ResNet's parameters (published IMAGENET1K_V1 figures)."""
    densenets = sorted((v[0], n, v[2]) for n, v in TORCHVISION.items() if n.startswith("densenet"))
    matches = []
    for name, (params, _, top1) in TORCHVISION.items():
        if name.startswith("resnet"):
            match = next(((p, n) for p, n, acc in densenets if acc >= top1), None)
            matches.append((name, match[1] if match else None, match[0] / params if match else None))
    return matches


ABOUT_A_THIRD = 5 / 12  # halfway between a third and a half: any share nearer a third


def decide_parameter_efficiency(shares) -> str:
    """``shares``: for each torchvision ResNet, the parameters of the smallest torchvision DenseNet whose
    published ImageNet top-1 is at least the ResNet's, as a share of the ResNet's parameters (NaN where no
    DenseNet reaches it). 'About a third' is a share ≤ 5/12 ≈ 0.42, halfway between a third and a half.
    The verdict is confirmed when every ResNet is matched within it, partly when some are, refuted when none is."""
    within = np.nan_to_num(np.asarray(shares, np.float64), nan=np.inf) <= ABOUT_A_THIRD
    return CONFIRMED if within.all() else PARTLY if within.any() else REFUTED


@claim("P5", "DenseNet reaches ResNet's ImageNet accuracy with about a third of the parameters",
       decide=decide_parameter_efficiency)
def parameter_efficiency(ctx: Context) -> Outcome:
    imagenet = _imagenet_matches()
    verdict = decide_parameter_efficiency(shares=[np.nan if share is None else share for _, _, share in imagenet])
    within = [r for r, d, share in imagenet if d and share <= ABOUT_A_THIRD]

    shape = mnist_14(ctx).image_shape
    table = {}  # label -> (family, parameters, accuracies): MNIST context, not used by the verdict
    for family, members in families(ctx).items():
        for label, build in members.items():
            table[label] = (family, _parameters(build, shape), _accuracy(runs(ctx, label, build)))
    reference = list(families(ctx)["ResNet"])[-1]
    target = table[reference][2].mean()

    shares = {r: f"{share:.2f}" if d else "none" for r, d, share in imagenet}
    fig, (left, right) = plots.subplots(2, width=6)
    for family, prefix, marker in (("resnet", "ResNet", "o"), ("densenet", "DenseNet", "s")):
        members = sorted((v[0] / 1e6, v[2], n) for n, v in TORCHVISION.items()
                         if n.startswith(family) and not n.startswith("resnext"))
        left.plot([m[0] for m in members], [m[1] for m in members], marker + "-", label=f"{prefix} (torchvision)")
        for params, top1, name in members:
            share = shares.get(name, "")
            left.annotate(name[len(family):] + (f" ({share})" if share else ""), (params, top1),
                          textcoords="offset points", xytext=(4, -10), fontsize=7)
    plots.log_axis_ticks(left, [8, 15, 30, 60])
    left.set(xlabel="million parameters", ylabel="ImageNet top-1 (%)",
             title="deciding: ImageNet, published IMAGENET1K_V1\n(ResNet: share the smallest DenseNet as "
                   "accurate needs)")
    left.legend(fontsize=8, loc="lower right")
    for family in ("ResNet", "DenseNet-BC"):
        members = [(p, acc) for f, p, acc in table.values() if f == family]
        plots.points_with_range(right, [p for p, _ in members], [acc for _, acc in members], family)
    right.axhline(target, color="k", ls=":", label=f"{reference}'s mean")
    context_params = sorted(p for _, p, _ in table.values())
    plots.log_axis_ticks(right, context_params, [f"{p / 1e3:.0f}k" for p in context_params])
    right.set(xlabel="parameters", ylabel="test accuracy", title="context only: MNIST 14×14, 4,000 images")
    plots.legend_outside(right)
    plot = ctx.save_plot(fig, "P5_parameter_efficiency.png")

    published = "; ".join(f"{r} → {d} ({share:.2f})" if d else f"{r} → none" for r, d, share in imagenet)
    rows = [[label, family, f"{params:,}", spread(acc)] for label, (family, params, acc) in table.items()]
    reaching = sorted((params, label) for label, (family, params, acc) in table.items()
                      if family == "DenseNet-BC" and acc.mean() >= target)
    context = (f"the smallest DenseNet-BC whose mean test accuracy reaches {reference}'s is {reaching[0][1]}, with "
               f"{reaching[0][0] / table[reference][1]:.2f} of its parameters" if reaching
               else f"no DenseNet-BC reaches {reference}'s mean {target:.4f}")
    return Outcome(
        verdict=verdict,
        measured=f"smallest DenseNet with at least each ResNet's top-1, share of its parameters: {published}; "
                 f"{len(within)} of {len(imagenet)} within {ABOUT_A_THIRD:.2f}",
        rule=f"'about a third' is a share ≤ 5/12 ≈ {ABOUT_A_THIRD:.2f} (halfway between a third and a half); for "
             "each ResNet the smallest DenseNet with at least its published top-1: confirmed when every ResNet is "
             "matched within that share, partly when some are, refuted when none is",
        setup="published ImageNet top-1 and parameters of torchvision 0.28's IMAGENET1K_V1 weights, ResNet-18/34/"
              "50/101/152 and DenseNet-121/169/201/161 (ImageNet is not trainable here). 'One third' is Huang et "
              "al. 2017, Fig. 4 (middle): DenseNet-BC needs about 1/3 of the parameters of pre-activation ResNets "
              "for the same CIFAR-10+ error; on ImageNet their Fig. 3 compares DenseNet-201 (20 M parameters) "
              "with ResNet-101 (more than 40 M). Context, not used by the verdict: "
              + _setup(ctx, "ResNets and DenseNet-BCs (k = 12) of three sizes, all 4,000 training images"),
        plots=(plot,),
        details="ImageNet, torchvision 0.28 IMAGENET1K_V1: smallest DenseNet with at least the ResNet's top-1 "
                "(share of its parameters): " + published
                + f"\n\nContext only, not used by the verdict (MNIST 14×14): {context}.\n\n"
                + markdown_table(["model", "family", "parameters", "test accuracy"], rows),
    )


CLAIMS = [small_data, parameter_efficiency]
