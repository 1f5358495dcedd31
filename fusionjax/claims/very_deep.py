"""O10, a 1202-layer ResNet on scikit-learn's digits: does it train, and how does it compare with ResNet-110 at
the same budget?

He et al. 2016 §4.2 trained a 1202-layer CIFAR ResNet (n = 200, 19.4 M parameters) to a training error below
0.1% and a test error of 7.93%, against ResNet-110's 6.43%: it trains, and overfits. The 1202-layer net here is
``nets.cifar_net(1202, scan=True)``, the same network with each stage's identical blocks as one ``nn.scan``:
unrolled, XLA:CPU would compile its 600 blocks one by one.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from fusionjax.claims import data, depth, nets, plots
from fusionjax.claims.base import (CONFIRMED, NOT_MEASURABLE, PARTLY, REFUTED, Context, Outcome, claim, markdown_table,
                                   spread)
from fusionjax.claims.training import Budget, trained

CHANCE_LOSS = math.log(10)  # cross-entropy of a uniform guess over the ten digits
SEED_MARGIN = 0.05  # one 1202-layer seed against ResNet-110's seeds: five points of training error for seed noise
REFERENCE_LEARNED = 0.5  # ResNet-110 has learned at the budget when every seed ends at most here (chance: 0.9)


def decide_very_deep(*, deep_train_loss: list[float], deep_final_train_error: float,
                     reference_final_train_error: list[float]) -> str:
    """A non-finite training loss of the 1202-layer net at any measurement (diverged): refuted, whatever the
    reference did. Otherwise the budget must be one where ResNet-110 learns (every seed's final training error
    ≤ 0.5); if it does not, nothing can be said of the deeper net: not measurable here. The 1202-layer net
    "trains" when its final training error is within five points of the worst ResNet-110 seed's: confirmed. It
    learns, but less, when its final loss is below chance (ln 10): partly. A final loss no better than chance:
    refuted."""
    losses = np.asarray(deep_train_loss, np.float64)
    if not np.all(np.isfinite(losses)):
        return REFUTED
    if max(reference_final_train_error) > REFERENCE_LEARNED:
        return NOT_MEASURABLE
    if deep_final_train_error <= max(reference_final_train_error) + SEED_MARGIN:
        return CONFIRMED
    return PARTLY if losses[-1] < CHANCE_LOSS else REFUTED


def _parameters(model, image_shape) -> int:
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *image_shape)), train=False))
    return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(shapes["params"]))


@claim("O10", "a 1202-layer ResNet still trains (He et al. 2016 §4.2: training error < 0.1%), though its test error "
              "(7.93%) is worse than ResNet-110's (6.43%)", decide=decide_very_deep)
def very_deep(ctx: Context) -> Outcome:
    deep_depth, reference_depth = ctx.pick((1202, 110), (56, 8))
    # He et al. warm deep CIFAR nets up at a tenth of the rate; here a longer linear warm-up to a halved rate
    budget = ctx.pick(Budget(steps=200, batch_size=32, learning_rate=0.05, warmup=0.1, evals=4),
                      Budget(steps=4, batch_size=16, evals=2))
    reference_seeds = range(ctx.pick(3, 1))
    digits = ctx.cached("digits", data.digits)
    deep_model = nets.cifar_net(deep_depth, scan=True)
    deep = trained(ctx, f"residual{deep_depth}-scanned", lambda: deep_model, digits, budget, range(1))
    reference = trained(ctx, f"residual{reference_depth}", lambda: nets.cifar_model("residual", reference_depth),
                        digits, budget, reference_seeds)
    final = {name: np.asarray([getattr(r, name)[-1] for r in reference])
             for name in ("train_loss", "train_error", "test_error")}
    run = deep[0]
    verdict = decide_very_deep(deep_train_loss=list(run.train_loss), deep_final_train_error=run.train_error[-1],
                               reference_final_train_error=list(final["train_error"]))

    fig, (left, right) = plots.subplots(2, width=5.2)
    for ax, metric, floor in ((left, "train_loss", 1e-3), (right, "train_error", 1e-2)):
        plots.band(ax, reference[0].steps, [getattr(r, metric) for r in reference], f"ResNet-{reference_depth}",
                   color="C0", marker="o")
        values = np.asarray(getattr(run, metric), np.float64)
        shown = np.where(np.isfinite(values), values, np.nan)  # a diverged point is a gap, and the table says so
        ax.plot(run.steps, shown, color="C3", ls="--", marker="s", label=f"ResNet-{deep_depth} (n=1)")
        if metric == "train_loss":
            ax.axhline(CHANCE_LOSS, color="grey", lw=0.8, ls=":", label="chance (ln 10)")
        highest = np.nanmax([np.nanmax(shown, initial=0.0), CHANCE_LOSS if metric == "train_loss" else 1.0,
                             *(max(getattr(r, metric)) for r in reference)])
        ax.set(xlabel="step", ylabel=metric.replace("_", " ").replace("train", "training"), xticks=run.steps,
               title="whole training split, evaluation mode")
        plots.log_axis_with_zero(ax, floor)
        ax.set_ylim(top=highest * 2)
        plots.legend_outside(ax)
    plot = ctx.save_plot(fig, "O10_very_deep.png")

    parameters = _parameters(deep_model, digits.image_shape)
    rows = [[f"ResNet-{deep_depth}", 1, f"{run.train_loss[-1]:.4g}", f"{run.train_error[-1]:.4g}",
             f"{run.test_error[-1]:.4g}"],
            [f"ResNet-{reference_depth}", len(reference), spread(final["train_loss"]), spread(final["train_error"]),
             spread(final["test_error"])]]
    return Outcome(
        verdict=verdict,
        measured=f"ResNet-{deep_depth}: training loss {', '.join(f'{v:.4g}' for v in run.train_loss)} at steps "
                 f"{', '.join(map(str, run.steps))}, final training error {run.train_error[-1]:.4g}, test error "
                 f"{run.test_error[-1]:.4g}; ResNet-{reference_depth}: final training error "
                 f"{spread(final['train_error'])}, test error {spread(final['test_error'])}",
        rule=f"refuted when ResNet-{deep_depth}'s training loss is non-finite at any measurement (diverged); not "
             f"measurable here when ResNet-{reference_depth} does not learn at this budget (a seed's final training "
             f"error above {REFERENCE_LEARNED:g}; chance is 0.9); else confirmed when ResNet-{deep_depth}'s final "
             f"training error is at most {SEED_MARGIN * 100:.0f} points above the worst ResNet-{reference_depth} "
             f"seed's, partly when it is higher but its loss ends below chance (ln 10 = {CHANCE_LOSS:.3f}), refuted "
             "when the loss ends at chance or above. The test errors are context: one deep seed cannot show an "
             "overfitting gap",
        setup=f"ResNet-{deep_depth} (CIFAR layout, option-A shortcuts, one input channel, {parameters / 1e6:.2f} M "
              f"parameters; each stage's identical blocks as one nn.scan), one seed, beside ResNet-{reference_depth} "
              f"({len(reference)} seed(s), trained on this budget here), both on {digits.describe()}; "
              f"{budget.describe()}, training "
              f"loss and error on the whole training split at steps {', '.join(map(str, run.steps))}; no "
              f"augmentation. A smaller budget than O2's ({depth._budget(ctx).describe()}), which the "
              f"{deep_depth}-layer net cannot finish within this report's time on two CPU cores; a halved rate and a "
              "longer warm-up, as He et al. start ResNet-110 and -1202 at 0.01. Published: He et "
              "al. 2016 §4.2 and Table 6 (CIFAR-10, 64k iterations of batch 128): ResNet-1202 19.4 M parameters, "
              "training error < 0.1%, test error 7.93%; ResNet-110 6.43%"
              + ctx.pick("", f"; quick run: ResNet-{deep_depth} stands in for ResNet-1202 and ResNet-"
                             f"{reference_depth} for ResNet-110, {budget.steps} steps"),
        plots=(plot,),
        details=markdown_table(["model", "seeds", "final training loss", "final training error", "test error"], rows),
    )


CLAIMS = [very_deep]
