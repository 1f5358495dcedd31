"""M1–M4, memory and deployment: what a training step keeps, what the memory-efficient DenseNet saves and costs,
BatchNorm folding, and int8 quantization of add- and concat-fused models."""

import functools
import statistics

import jax
import jax.numpy as jnp
import numpy as np

import fusionjax
from fusionjax.analysis import alternating_times, compiled_memory, saved_residual_bytes
from fusionjax.analysis.gradients import cross_entropy
from fusionjax.claims import nets, plots, small_data
from fusionjax.claims.base import (CONFIRMED, PARTLY, REFUTED, Context, Outcome, claim, markdown_table, separated,
                                   spread)
from fusionjax.claims.fusion import FusedBlock

MIB = 2**20


def _pair(ctx: Context) -> tuple[dict, int, int]:
    """The ResNet and DenseNet that M1 and M2 measure (builders taking model options), their input size and the
    batch of the compiled step."""
    return ctx.pick(
        ({"resnet50": lambda **o: fusionjax.create_model("resnet50", **o),
          "densenet121": lambda **o: fusionjax.create_model("densenet121", **o)}, 224, 4),
        ({"resnet8": lambda **o: nets.cifar_net(8, in_channels=3, **o),
          "densenet_bc_10_6": lambda **o: nets.densenet_bc(10, 6, in_channels=3, **o)}, 16, 2))


def _loss(model):
    def loss(params, batch_stats, images):
        logits, _ = model.apply({"params": params, "batch_stats": batch_stats}, images, train=True,
                                mutable=["batch_stats"])
        return cross_entropy(logits, jnp.zeros(images.shape[0], jnp.int32))

    return loss


def _abstract(model, batch: int, size: int):
    images = jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)
    variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), images)
    return variables["params"], variables["batch_stats"], images


def _step_memory(ctx: Context, label: str, build, size: int, batch: int, **options):
    """(saved residual bytes per image, the compiled gradient step, its memory), cached for M1 and M2."""
    def measure():
        model = build(**options)
        saved = (saved_residual_bytes(_loss(model), *_abstract(model, 2, size))
                 - saved_residual_bytes(_loss(model), *_abstract(model, 1, size)))
        compiled = jax.jit(jax.grad(_loss(model))).lower(*_abstract(model, batch, size)).compile()
        return model, saved, compiled, compiled_memory(compiled)

    return ctx.cached(("step memory", label, tuple(sorted(options.items())), size, batch), measure)


@claim("M1", "DenseNet needs 30–40% more training memory than ResNet (DenseNet-121 vs ResNet-50, same batch)")
def training_memory(ctx: Context) -> Outcome:
    pair, size, batch = _pair(ctx)
    (res, res_build), (dense, dense_build) = pair.items()
    measured = {label: _step_memory(ctx, label, build, size, batch) for label, build in ((res, res_build),
                                                                                      (dense, dense_build))}
    saved_ratio = measured[dense][1] / measured[res][1]
    temp_ratio = measured[dense][3].temporaries / measured[res][3].temporaries
    within = [1.25 <= r <= 1.45 for r in (saved_ratio, temp_ratio)]
    more = [r > 1 for r in (saved_ratio, temp_ratio)]
    verdict = CONFIRMED if all(within) else (PARTLY if any(within) or all(more) else REFUTED)
    fig, (ax,) = plots.subplots(1, width=6)
    x = np.arange(2)
    ax.bar(x - 0.2, [measured[label][1] / MIB for label in (res, dense)], 0.4, label="saved for backward, per image")
    ax.bar(x + 0.2, [measured[label][3].temporaries / batch / MIB for label in (res, dense)], 0.4,
           label=f"compiled scratch ÷ batch {batch}")
    ax.set_xticks(x, [res, dense])
    ax.set(ylabel="MiB", title=f"training step, {size}×{size}, float32, XLA:CPU")
    ax.legend(fontsize=8)
    plot = plots.save(fig, ctx.plot_path("M1_training_memory.png"))
    rows = [[label, f"{m[1] / MIB:.1f}", f"{m[3].temporaries / MIB:.1f}", f"{m[3].peak / MIB:.1f}"]
            for label, m in measured.items()]
    return Outcome(
        verdict=verdict,
        measured=f"{dense} ÷ {res}: saved activations per image {saved_ratio:.2f}×, compiled scratch at batch "
                 f"{batch} {temp_ratio:.2f}× (CPU compiler; the GPU figure needs a GPU run)",
        rule="'30–40% more' is a ratio in [1.25, 1.45]: confirmed when both measures fall in it; partly when one "
             "does, or when DenseNet needs more by both but by another amount; refuted otherwise",
        setup=f"training-mode gradient of the cross-entropy, float32, {size}×{size}: saved activations from the "
              "traced VJP of the plain layer ops, what a GPU keeps (fusionjax.analysis.saved_residual_bytes, batch 2 − "
              "batch 1), scratch of the program "
              f"XLA:CPU compiles at batch {batch} (compiled_memory)",
        plots=(plot,),
        details=markdown_table(["model", "saved per image (MiB)", f"compiled scratch, batch {batch} (MiB)",
                                "compiled peak (MiB)"], rows),
    )


@claim("M2", "a shared-storage (memory-efficient) DenseNet cuts that memory at some compute cost")
def memory_efficient(ctx: Context) -> Outcome:
    pair, size, batch = _pair(ctx)
    label, build = list(pair.items())[1]
    plain = _step_memory(ctx, label, build, size, batch)
    lean = _step_memory(ctx, label, build, size, batch, memory_efficient=True)
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.standard_normal((batch, size, size, 3)), jnp.float32)
    calls = {}
    for name, (model, _, compiled, _) in (("plain", plain), ("memory_efficient", lean)):
        variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), images)
        calls[name] = functools.partial(compiled, variables["params"], variables["batch_stats"], images)
    rounds = ctx.pick(5, 2)
    times = alternating_times(calls, rounds)
    saved_cut, temp_cut = 1 - lean[1] / plain[1], 1 - lean[3].temporaries / plain[3].temporaries
    cost = statistics.median(times["memory_efficient"]) / statistics.median(times["plain"])
    if saved_cut >= 0.2 and temp_cut >= 0.1 and cost >= 1.02:
        verdict = CONFIRMED
    elif saved_cut >= 0.2 or temp_cut >= 0.1:
        verdict = PARTLY
    else:
        verdict = REFUTED
    fig, (left, right) = plots.subplots(2, width=5)
    x = np.arange(2)
    left.bar(x - 0.2, [plain[1] / MIB, lean[1] / MIB], 0.4, label="saved per image")
    left.bar(x + 0.2, [plain[3].temporaries / batch / MIB, lean[3].temporaries / batch / MIB], 0.4,
             label="compiled scratch ÷ batch")
    left.set_xticks(x, ["plain", "memory_efficient"])
    left.set(ylabel="MiB", title=f"{label}, {size}×{size}")
    left.legend(fontsize=8)
    right.boxplot([np.asarray(times["plain"]) * 1e3, np.asarray(times["memory_efficient"]) * 1e3])
    right.set_xticks([1, 2], ["plain", "memory_efficient"])
    right.set(ylabel="ms per gradient step", title=f"batch {batch}, {rounds} alternating rounds")
    plot = plots.save(fig, ctx.plot_path("M2_memory_efficient.png"))
    rows = [[name, f"{m[1] / MIB:.1f}", f"{m[3].temporaries / MIB:.1f}", f"{statistics.median(times[name]) * 1e3:.0f}",
             f"{min(times[name]) * 1e3:.0f}"] for name, m in (("plain", plain), ("memory_efficient", lean))]
    return Outcome(
        verdict=verdict,
        measured=f"memory_efficient keeps {1 - saved_cut:.2f}× the plain {label}'s saved activations and "
                 f"{1 - temp_cut:.2f}× its compiled scratch; gradient step {cost:.2f}× the plain one's median time "
                 "(XLA:CPU)",
        rule="confirmed when saved activations drop ≥ 20%, compiled scratch ≥ 10% and the step is ≥ 2% slower; "
             "partly when memory drops by one measure only or at no measurable cost; refuted when neither drops",
        setup=f"{label} with and without memory_efficient (flax.linen.remat of each layer's "
              "concat→BN→ReLU→1×1), "
              f"training-mode gradient at {size}×{size}, batch {batch}; step times alternate on random images",
        plots=(plot,),
        details=markdown_table(["variant", "saved per image (MiB)", "compiled scratch (MiB)", "median ms", "min ms"],
                               rows),
    )


def _randomized_statistics(variables: dict, seed: int) -> dict:
    """BatchNorm running statistics drawn at random, so that folding has something to fold."""
    rng = np.random.default_rng(seed)

    def draw(path, x):
        name = path[-1].key
        return (rng.uniform(0.5, 2.0, x.shape) if name == "var" else rng.normal(0, 0.2, x.shape)).astype(np.float32)

    return {**variables, "batch_stats": jax.tree_util.tree_map_with_path(draw, variables["batch_stats"])}


@claim("M3", "folding BatchNorm into the preceding convolution speeds inference and leaves outputs unchanged")
def batchnorm_folding(ctx: Context) -> Outcome:
    from fusionjax.deploy import fold_batchnorm

    rounds = ctx.pick(11, 3)
    mnist = small_data.mnist_14(ctx)
    label, build = list(small_data.families(ctx)["ResNet"].items())[-1]
    trained = small_data.runs(ctx, label, build)[0]
    cases = {f"{label} (trained on MNIST)": (build(), trained.variables, mnist.test_images)}
    if not ctx.quick:
        images = jnp.asarray(np.random.default_rng(1).standard_normal((8, 224, 224, 3)), jnp.float32)
        for name in ("resnet50", "densenet121"):
            model = fusionjax.create_model(name)
            variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), images[:1])
            cases[f"{name} (random statistics)"] = (model, _randomized_statistics(variables, 0), images)
    rows, errors, speedups, same_predictions = [], [], [], []
    for case, (model, variables, images) in cases.items():
        folded_model, folded = fold_batchnorm(model, variables)
        forward = jax.jit(functools.partial(model.apply, train=False))
        folded_forward = jax.jit(folded_model.apply)
        reference, result = forward(variables, images), folded_forward(folded, images)
        errors.append(float(jnp.max(jnp.abs(result - reference)) / jnp.max(jnp.abs(reference))))
        same_predictions.append(bool(jnp.all(jnp.argmax(result, -1) == jnp.argmax(reference, -1))))
        times = alternating_times({"unfolded": functools.partial(forward, variables, images),
                                   "folded": functools.partial(folded_forward, folded, images)}, rounds)
        speedups.append(min(times["unfolded"]) / min(times["folded"]))
        rows.append([case, tuple(images.shape), f"{errors[-1]:.1e}", "yes" if same_predictions[-1] else "no",
                     f"{min(times['unfolded']) * 1e3:.1f}", f"{min(times['folded']) * 1e3:.1f}", f"{speedups[-1]:.2f}"])
    unchanged = max(errors) <= 1e-5 and all(same_predictions)
    faster = all(s >= 1.05 for s in speedups)
    verdict = (CONFIRMED if faster else PARTLY) if unchanged else REFUTED
    fig, (ax,) = plots.subplots(1, width=6.5)
    ax.bar(range(len(cases)), speedups)
    ax.axhline(1, color="k", lw=0.5)
    ax.set_xticks(range(len(cases)), list(cases), fontsize=7)
    ax.set(ylabel="unfolded ÷ folded forward time (min)", title="BatchNorm folding on this CPU")
    plot = plots.save(fig, ctx.plot_path("M3_batchnorm_folding.png"))
    return Outcome(
        verdict=verdict,
        measured=f"largest output change {max(errors):.1e} of the largest logit, predictions "
                 f"{'identical' if all(same_predictions) else 'changed'}; speed-up "
                 + ", ".join(f"{s:.2f}×" for s in speedups) + " (XLA:CPU)",
        rule="unchanged: every output within 1e-5 of the largest logit and identical predictions; faster: ≥ 5% "
             "less forward time (minimum of alternating rounds) for every model. Confirmed when both, partly when "
             "only unchanged, refuted when outputs change",
        setup="fusionjax.deploy.fold_batchnorm; the trained model of P5 on the 1,000 MNIST test images (14×14), and "
              "torchvision's ResNet-50 / DenseNet-121 architectures with random running statistics at batch 8, "
              "224×224 (full run only); evaluation forward, float32",
        plots=(plot,),
        details=markdown_table(["model", "input", "max change", "same predictions", "unfolded ms", "folded ms",
                                "speed-up"], rows),
    )


def _relative_error(quantized: jax.Array, exact: jax.Array) -> float:
    return float(jnp.linalg.norm(quantized - exact) / jnp.linalg.norm(exact))


@claim("M4", "add quantizes more easily than concat: smaller int8 error for add-fused blocks and networks")
def int8(ctx: Context) -> Outcome:
    try:
        from fusionjax.export.quantize import int8_apply
    except ImportError as error:
        raise ImportError("M4 needs fusionjax.export.quantize.int8_apply (the export package).") from error
    mnist = small_data.mnist_14(ctx)
    calibration, test = mnist.train_images[:256], mnist.test_images
    seeds = range(ctx.pick(3, 1))
    block_errors = {"add": [], "concat": []}
    stem = fusionjax.layers.Conv2d(32, 3)
    for seed in seeds:  # real features: MNIST through a random 3×3 conv and ReLU, then one fused block
        stem_variables = stem.init(jax.random.key(100 + seed), calibration[:1])
        features = {name: jax.nn.relu(stem.apply(stem_variables, x)) for name, x in (("cal", calibration),
                                                                                   ("test", test))}
        for mode in block_errors:
            block = FusedBlock(mode)
            variables = block.init(jax.random.key(seed), features["cal"][:1])
            quantized = int8_apply(block, variables, features["cal"])
            exact = block.apply(variables, features["test"])
            block_errors[mode].append(_relative_error(quantized(features["test"]), exact))
    network_errors, drops = {}, {}
    for members in small_data.families(ctx).values():
        label, build = list(members.items())[-1]
        model = build()
        errors, family_drops = [], []
        for run in small_data.runs(ctx, label, build):
            exact = model.apply(run.variables, test, train=False)
            quantized = int8_apply(model, run.variables, calibration, train=False)(test)
            errors.append(_relative_error(quantized, exact))
            correct = [int(jnp.sum(jnp.argmax(logits, -1) == mnist.test_labels)) for logits in (exact, quantized)]
            family_drops.append((correct[0] - correct[1]) / len(mnist.test_labels))  # whole images, no rounding
        network_errors[label], drops[label] = np.asarray(errors), np.asarray(family_drops)
    res, dense = list(network_errors)
    add_wins = [separated(block_errors["add"], block_errors["concat"]),
                separated(network_errors[res], network_errors[dense])]
    concat_wins = [separated(block_errors["concat"], block_errors["add"]),
                   separated(network_errors[dense], network_errors[res])]
    verdict = CONFIRMED if all(add_wins) else (REFUTED if all(concat_wins) or not any(add_wins) else PARTLY)
    fig, (left, right) = plots.subplots(2, width=5)
    plots.points_with_range(left, [0, 1], [block_errors["add"], block_errors["concat"]], "fused block")
    left.set_xticks([0, 1], ["add-fused", "concat-fused"])
    left.set(ylabel="relative output error, int8 vs float32", title="one block on MNIST features")
    plots.points_with_range(right, [0, 1], [network_errors[res], network_errors[dense]], "trained network")
    right.set_xticks([0, 1], [res, dense])
    right.set(ylabel="relative logit error, int8 vs float32", title="networks trained in P5")
    plot = plots.save(fig, ctx.plot_path("M4_int8.png"))
    rows = [["add-fused block", spread(block_errors["add"]), ""],
            ["concat-fused block", spread(block_errors["concat"]), ""]]
    rows += [[label, spread(network_errors[label]), spread(np.asarray(drops[label]) * 100)] for label in network_errors]
    return Outcome(
        verdict=verdict,
        measured=f"relative int8 error: blocks add {spread(block_errors['add'])} vs concat "
                 f"{spread(block_errors['concat'])}; networks {res} {spread(network_errors[res])} vs {dense} "
                 f"{spread(network_errors[dense])} (accuracy drop {spread(drops[res] * 100)} vs "
                 f"{spread(drops[dense] * 100)} points)",
        rule="in each comparison add wins when every add seed has a smaller relative output error than every "
             "concat seed; confirmed when add wins both, refuted when concat wins both or add wins neither, "
             "partly otherwise",
        setup=f"fusionjax.export.quantize.int8_apply: int8 weights per output channel, int8 activations per tensor "
              f"(every conv/dense input and every add/concat output), calibrated on 256 MNIST training images "
              f"(14×14); blocks: a 3×3 conv branch merged with its 32-channel input, then a 1×1 conv, {len(seeds)} "
              f"initialization(s); networks: P5's trained {res} and {dense}, {len(seeds)} seed(s), on the 1,000 "
              "test images",
        plots=(plot,),
        details=markdown_table(["model", "relative error", "accuracy drop (points)"], rows),
    )


CLAIMS = [training_memory, memory_efficient, batchnorm_folding, int8]
