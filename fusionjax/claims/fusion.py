"""A1–A5, the arithmetic of the two merges: shapes, the add-as-tied-concat identity, parameter and FLOP ratios,
what a linear map can recover from each, and wall-clock time per FLOP."""

import functools
import statistics

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import fusionjax
from fusionjax.analysis import (alternating_times, concat_kernel_for_add, layer_costs, linear_reconstruction_error,
                                xla_flops)
from fusionjax.blocks import DenseLayer
from fusionjax.claims import data, nets, plots
from fusionjax.claims.base import (CONFIRMED, NOT_MEASURABLE, PARTLY, REFUTED, Context, Outcome, claim,
                                   markdown_table)
from fusionjax.fusion import add, concat
from fusionjax.layers import Conv2d


class FuseThenConv(nn.Module):
    """k feature maps merged by ``add`` or ``concat``, then one convolution to ``features`` channels."""

    mode: str
    features: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, inputs, train: bool = False):
        merged = add(*inputs) if self.mode == "add" else concat(*inputs)
        return Conv2d(self.features, self.kernel_size, name="conv")(merged)


class FusedBlock(nn.Module):
    """A 3×3 conv branch merged with its input by ``add`` or ``concat``, then a 1×1 conv back to the input's width:
    the smallest unit in which the merge decides what the next layer reads."""

    mode: str

    @nn.compact
    def __call__(self, x, train: bool = False):
        branch = nn.relu(Conv2d(x.shape[-1], 3, name="branch")(x))
        merged = add(x, branch) if self.mode == "add" else concat(x, branch)
        return Conv2d(x.shape[-1], 1, name="mix")(merged)


def decide_channel_counts(*, add_keeps_width: bool, concat_is_k_times: bool, dense_layers_grow_by_k: bool) -> str:
    """Verdict: confirmed when add of k maps of C channels gives exactly C, concat exactly k·C, and every dense layer
    reads exactly the growth rate more channels than the layer before it in its block; refuted when any of the three
    fails."""
    return CONFIRMED if add_keeps_width and concat_is_k_times and dense_layers_grow_by_k else REFUTED


@claim("A1", "add keeps the channel count; concat grows it linearly with the number of inputs (a DenseNet block "
             "widens by the growth rate per layer)", decide=decide_channel_counts)
def channel_counts(ctx: Context) -> Outcome:
    channels, counts = 16, range(2, 9)
    shape = (1, 4, 4, channels)
    maps = [jax.ShapeDtypeStruct(shape, jnp.float32)] * max(counts)
    added = [jax.eval_shape(add, *maps[:k]).shape[-1] for k in counts]
    joined = [jax.eval_shape(concat, *maps[:k]).shape[-1] for k in counts]

    name, build = ctx.pick(("densenet121", lambda: fusionjax.create_model("densenet121")),
                           ("densenet_bc_40_12", lambda: nets.densenet_bc(40, 12, in_channels=3)))
    model = build()
    widths = []  # (block, input channels of each dense layer)

    def interceptor(next_fun, args, kwargs, context):
        if isinstance(context.module, DenseLayer) and context.method_name == "__call__":
            widths.append((context.module.path[0], sum(f.shape[-1] for f in args[0])))
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(interceptor):
        jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                       jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
    growth = model.growth_rate
    linear = all(b - a == growth for (blk_a, a), (blk_b, b) in zip(widths, widths[1:]) if blk_a == blk_b)
    verdict = decide_channel_counts(add_keeps_width=added == [channels] * len(added),
                                    concat_is_k_times=joined == [k * channels for k in counts],
                                    dense_layers_grow_by_k=linear)

    fig, (left, right) = plots.subplots(2)
    left.plot(counts, added, "o-", label="add")
    left.plot(counts, joined, "s-", label="concat")
    left.set(xlabel="number of inputs k", ylabel="output channels", title=f"merging k maps of {channels} channels")
    left.legend(loc="upper left")  # add lies flat along the bottom, concat rises to the right
    right.plot(range(1, len(widths) + 1), [w for _, w in widths], ".-")
    right.set(xlabel="dense layer (all blocks, in order)", ylabel="input channels",
              title=f"{name}: each layer reads C0 + i·{growth}")
    plot = ctx.save_plot(fig, "A1_channels.png")
    firsts = {}
    for block, width in widths:
        firsts.setdefault(block, []).append(width)
    rows = [[block, len(w), w[0], w[-1], f"{(w[-1] - w[0]) / max(len(w) - 1, 1):g}"] for block, w in firsts.items()]
    return Outcome(
        verdict=verdict,
        measured=f"add of k=2…8 maps of {channels} ch → {channels} ch; concat → {joined[0]}…{joined[-1]} "
                 f"(k·{channels}); {name}: {'every' if linear else 'not every'} dense layer reads {growth} "
                 "channels more than the one before it in its block",
        rule=f"confirmed when the shapes are exactly {channels} and k·{channels} and every dense layer's input is its "
             f"predecessor's plus the growth rate ({growth}); refuted when any of them is not",
        setup=f"shapes only (jax.eval_shape); {name} traced at 64×64",
        plots=(plot,),
        details=markdown_table(["block", "layers", "first input width", "last input width", "growth per layer"],
                               rows),
    )


IDENTITY_TOLERANCE = 1e-5  # float32 rounding of sums of up to 3·3·3·32 products (eps 1.2e-7 × √terms, with margin)


def decide_add_is_tied_concat(*, max_relative_difference: float) -> str:
    """Verdict: confirmed when conv(add) and conv(concat) with the kernel repeated for every input differ by at most
    1e-5 of the largest output (float32 rounding) in every case; refuted when any case differs by more."""
    return CONFIRMED if max_relative_difference <= IDENTITY_TOLERANCE else REFUTED


@claim("A2", "add is a special case of concat: a conv of add(a, b) equals a conv of concat(a, b) whose kernel "
             "repeats the same weights for both halves", decide=decide_add_is_tied_concat)
def add_is_tied_concat(ctx: Context) -> Outcome:
    rows, errors_by_case = [], {}
    key = jax.random.key(0)
    cases = ctx.pick([(2, 1, 1), (2, 3, 1), (2, 3, 2), (3, 3, 1)], [(2, 3, 1), (3, 3, 2)])
    for k, kernel_size, strides in cases:
        keys = jax.random.split(jax.random.fold_in(key, len(rows)), k + 1)
        inputs = [jax.random.normal(kk, (4, 16, 16, 32)) for kk in keys[:k]]
        conv = Conv2d(24, kernel_size, strides=strides, use_bias=True)
        variables = conv.init(keys[-1], inputs[0])
        tied = {"params": {"kernel": concat_kernel_for_add(variables["params"]["kernel"], k),
                           "bias": variables["params"]["bias"]}}
        via_add = conv.apply(variables, add(*inputs))
        via_concat = Conv2d(24, kernel_size, strides=strides, use_bias=True).apply(tied, concat(*inputs))
        relative = np.asarray(jnp.abs(via_add - via_concat) / jnp.max(jnp.abs(via_add))).ravel()
        label = f"k={k}, {kernel_size}×{kernel_size}/{strides}"
        errors_by_case[label] = relative
        rows.append([label, f"{relative.max():.2e}", f"{np.median(relative):.2e}"])
    worst = max(e.max() for e in errors_by_case.values())
    fig, (ax,) = plots.subplots(1, width=7)
    for label, errors in errors_by_case.items():  # exact zeros are drawn at 1e-12, the histogram's left edge
        ax.hist(np.log10(np.maximum(errors, 1e-12)), bins=60, histtype="step",
                label=f"{label} ({np.mean(errors == 0):.0%} exactly 0)")
    ax.axvline(np.log10(IDENTITY_TOLERANCE), color="k", ls="--", label="threshold 1e-5")
    ax.set(xlabel="log10 |conv(add) − conv(concat, [W; W])| / max |output|  (exact zeros at −12)",
           ylabel="elements", title="add = concat with tied weights (float32)")
    plots.legend_outside(ax)
    plot = ctx.save_plot(fig, "A2_identity.png")
    return Outcome(
        verdict=decide_add_is_tied_concat(max_relative_difference=float(worst)),
        measured=f"max relative difference {worst:.1e} over {len(cases)} cases (k inputs, kernel and stride in the "
                 "table)",
        rule="confirmed when the largest difference, relative to the largest output, is ≤ 1e-5 (float32 rounding); "
             "refuted when it is larger",
        setup="random N(0,1) inputs 4×16×16×32, Conv2d to 24 channels with bias, float32",
        plots=(plot,),
        details=markdown_table(["case", "max relative difference", "median"], rows),
    )


XLA_TOLERANCE = 0.05  # XLA's count adds add's own element-wise sums and leaves padded taps out: a few per cent


def decide_merge_costs(*, params_exact: bool, macs_exact: bool, xla_deviation: float) -> str:
    """Verdict: confirmed when concat's parameters and multiply-adds are exactly k× add's for every k and kernel, and
    XLA's operation count is within 5% of k×; partly when only the exact counts hold; refuted when parameters or
    multiply-adds are not exactly k×."""
    if not (params_exact and macs_exact):
        return REFUTED
    return CONFIRMED if xla_deviation <= XLA_TOLERANCE else PARTLY


@claim("A3", "concat followed by a convolution costs k× the parameters and FLOPs of add followed by it (k inputs)",
       decide=decide_merge_costs)
def merge_costs(ctx: Context) -> Outcome:
    channels, size, counts = 64, 32, range(2, 7)
    rows, ratios = [], {"parameters": [], "multiply-adds": [], "XLA flops (merge included)": []}
    for kernel_size in (1, 3):
        for k in counts:
            maps = [jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)] * k
            measured = {}
            for mode in ("add", "concat"):
                module = FuseThenConv(mode, channels, kernel_size)
                costs = layer_costs(module, maps)
                variables = jax.eval_shape(module.init, jax.random.key(0), maps)
                flops = xla_flops(module.apply, variables, maps)
                measured[mode] = (sum(c.params for c in costs), sum(c.macs for c in costs), flops)
            ratio = [c / a for c, a in zip(measured["concat"], measured["add"])]
            if kernel_size == 3:
                for name, value in zip(ratios, ratio):
                    ratios[name].append(value)
            rows.append([f"{kernel_size}×{kernel_size}", k, *(f"{m:,.0f}" for m in measured["add"]),
                         *(f"{m:,.0f}" for m in measured["concat"]), *(f"{r:.3f}" for r in ratio)])
    xla_off = max(abs(float(r[-1]) / r[1] - 1) for r in rows)
    verdict = decide_merge_costs(params_exact=all(float(r[-3]) == r[1] for r in rows),
                                 macs_exact=all(float(r[-2]) == r[1] for r in rows), xla_deviation=xla_off)
    fig, (ax,) = plots.subplots(1, width=6)
    for name, values in ratios.items():
        ax.plot(list(counts), values, "o-", label=name)
    ax.plot(list(counts), list(counts), "k:", label="k")
    ax.set(xlabel="number of inputs k", ylabel="concat ÷ add", title=f"3×3 conv to {channels} ch after the merge")
    ax.set_xticks(list(counts))
    plots.legend_outside(ax)
    plot = ctx.save_plot(fig, "A3_costs.png")
    exact = verdict != REFUTED
    return Outcome(
        verdict=verdict,
        measured=f"parameters and multiply-adds: {'exactly' if exact else 'not exactly'} k× for k = 2…6 (1×1 and "
                 f"3×3); XLA's flops, which count "
                 f"add's own sums, within {xla_off:.1%} of k×",
        rule="confirmed when parameters and multiply-adds are exactly k× and XLA's operation count within 5% of k×; "
             "partly when only the first holds; refuted when parameters or multiply-adds are not exactly k×",
        setup=f"k maps of 1×{size}×{size}×{channels}, merged, then a conv to {channels} channels; counted by "
              "fusionjax.analysis.layer_costs and XLA's cost analysis",
        plots=(plot,),
        details=markdown_table(["kernel", "k", "add: params", "add: MACs", "add: XLA flops", "concat: params",
                                "concat: MACs", "concat: XLA flops", "params ×", "MACs ×", "XLA flops ×"], rows),
    )


def _shortcut_and_branch(images: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """The first block of a CIFAR ResNet (ResNet-8, -20, -56… share it, weights included: Flax draws them by
    module path) on real images at initialization, BatchNorm on batch statistics: its shortcut (the block's input)
    and its branch (conv→BN→ReLU→conv→BN), the two maps the block adds."""
    model = nets.cifar_net(8)

    @jax.jit
    def shortcut_and_branch(images):
        variables = model.init(jax.random.key(0), images, train=False)
        outputs, state = model.apply(variables, images, train=True, features=True,
                                     mutable=["batch_stats", "intermediates"],
                                     capture_intermediates=lambda m, _: "/".join(m.path) == "layer1_0/bn2")
        return outputs["stem"], state["intermediates"]["layer1_0"]["bn2"]["__call__"][0]

    return shortcut_and_branch(images)


LOST, KEPT = 0.01, 1e-4  # unexplained variance: lost above 1%; kept below float32 least squares' residual scale


def decide_information(*, add_unexplained: float, concat_unexplained: float) -> str:
    """Verdict: confirmed when the best affine map leaves ≥ 1% of (a, b)'s variance unexplained from add(a, b) of the
    real network's maps, and ≤ 1e-4 from concat(a, b) in every case; refuted otherwise."""
    return CONFIRMED if add_unexplained >= LOST and concat_unexplained <= KEPT else REFUTED


@claim("A4", "add loses information, concat does not: the best linear map recovers a and b from concat(a, b) but "
             "not from add(a, b)", decide=decide_information)
def information(ctx: Context) -> Outcome:
    mnist = ctx.cached("mnist", data.mnist)
    images = mnist.test_images[:ctx.pick(256, 32)]
    shortcut, branch = _shortcut_and_branch(images)
    rng = np.random.default_rng(0)
    independent = [rng.standard_normal(shortcut.shape).astype(np.float32) for _ in range(2)]
    cases = {"ResNet block 1 on MNIST (x, F(x))": (shortcut, branch), "independent N(0,1) maps": independent}
    rows, errors = [], {}
    for label, (a, b) in cases.items():
        targets = jnp.concatenate([a, b], axis=-1)
        errors[label] = (linear_reconstruction_error(add(a, b), targets),
                         linear_reconstruction_error(concat(a, b), targets))
        rows.append([label, f"{errors[label][0]:.4f}", f"{errors[label][1]:.1e}"])
    real_add, real_concat = errors[next(iter(cases))]
    verdict = decide_information(add_unexplained=real_add, concat_unexplained=max(e[1] for e in errors.values()))
    fig, (ax,) = plots.subplots(1, width=7)
    x = np.arange(len(cases))
    ax.bar(x - 0.2, [e[0] for e in errors.values()], 0.4, label="from add(a, b)")
    ax.bar(x + 0.2, [e[1] for e in errors.values()], 0.4, label="from concat(a, b)")
    ax.set_xticks(x, [label.split(" (")[0] for label in cases], fontsize=8)
    ax.set(ylabel="unexplained variance of (a, b)", title="best affine reconstruction of both inputs")
    plots.log_axis_with_zero(ax, 1e-14)  # concat's residual can be float32's exact 0
    plots.legend_outside(ax)
    plot = ctx.save_plot(fig, "A4_information.png")
    return Outcome(
        verdict=verdict,
        measured=f"fraction of (a, b)'s variance the best affine map cannot recover: from add {real_add:.3f}, from "
                 f"concat {real_concat:.1e} (a CIFAR ResNet's block 1 on MNIST); independent maps: "
                 f"{errors['independent N(0,1) maps'][0]:.3f} (theory 0.5)",
        rule="confirmed when add leaves ≥ 1% of the variance unexplained (block 1 on MNIST) and concat ≤ 1e-4 in "
             "both cases; otherwise refuted",
        setup=f"{len(images)} MNIST test images through the first block of a CIFAR ResNet (ResNet-20's; at "
              "initialization, BatchNorm on batch statistics); "
              "per-position least squares over all positions (fusionjax.analysis.linear_reconstruction_error)",
        plots=(plot,),
        details=markdown_table(["inputs", "unexplained after add", "unexplained after concat"], rows),
    )


def _forward_time_per_mac(models: dict, inputs: jax.Array, rounds: int) -> dict[str, tuple[float, float, int]]:
    """(min, median) seconds of each model's compiled evaluation forward, and its multiply-adds."""
    calls, macs = {}, {}
    for label, model in models.items():
        variables = jax.jit(functools.partial(model.init, train=False))(jax.random.key(0), inputs)
        forward = jax.jit(functools.partial(model.apply, train=False))
        calls[label] = functools.partial(forward, variables, inputs)
        macs[label] = sum(c.macs for c in layer_costs(model, inputs, train=False))
    times = alternating_times(calls, rounds)
    return {label: (min(t), statistics.median(t), macs[label]) for label, t in times.items()}


SLOWER = 1.1  # concat's side counts as slower per multiply-add from 10% on: beyond alternating rounds' noise


def decide_time_per_flop(*, backend: str, block_ratio: float, network_ratio: float) -> str:
    """The claim is about GPUs: not measurable here on any other backend (the CPU numbers are context only). On a
    GPU, confirmed when concat's side takes ≥ 1.1× add's time per multiply-add both in the blocks and in
    DenseNet-121 vs ResNet-50, partly when in one of the two, refuted when in neither."""
    if backend != "gpu":
        return NOT_MEASURABLE
    slower = [block_ratio >= SLOWER, network_ratio >= SLOWER]
    return CONFIRMED if all(slower) else (PARTLY if any(slower) else REFUTED)


@claim("A5", "on a GPU, concat is slower than its FLOPs suggest: more time per multiply-add than add, in blocks and "
             "in whole networks, so DenseNet-121 may infer slower than ResNet-50 despite fewer FLOPs",
       decide=decide_time_per_flop)
def time_per_flop(ctx: Context) -> Outcome:
    backend = jax.default_backend()
    where = "GPU" if backend == "gpu" else f"context: on XLA:{backend.upper()}"
    rounds = ctx.pick(15, 3)
    block_input = jax.random.normal(jax.random.key(0), ctx.pick((32, 32, 32, 64), (8, 16, 16, 32)))
    blocks = _forward_time_per_mac({"add-fused block": FusedBlock("add"), "concat-fused block": FusedBlock("concat")},
                                   block_input, rounds)
    size, batch = ctx.pick((224, 8), (16, 4))
    models = ctx.pick({"resnet50": lambda: fusionjax.create_model("resnet50"),
                       "densenet121": lambda: fusionjax.create_model("densenet121")},
                      {"resnet8": lambda: nets.cifar_net(8, in_channels=3),
                       "densenet_bc_16_12": lambda: nets.densenet_bc(16, 12, in_channels=3)})
    names = list(models)
    networks = _forward_time_per_mac({name: build() for name, build in models.items()},
                                     jax.random.normal(jax.random.key(1), (batch, size, size, 3)), rounds)
    results = {**blocks, **networks}
    per_mac = {label: t_min / macs * 1e12 for label, (t_min, _, macs) in results.items()}  # ps per multiply-add
    block_ratio = per_mac["concat-fused block"] / per_mac["add-fused block"]
    network_ratio = per_mac[names[1]] / per_mac[names[0]]
    time_ratio = networks[names[1]][0] / networks[names[0]][0]
    verdict = decide_time_per_flop(backend=backend, block_ratio=block_ratio, network_ratio=network_ratio)
    fig, (ax,) = plots.subplots(1, width=6.5)
    labels = list(results)
    ax.bar(range(len(labels)), [per_mac[label] for label in labels], color=["C0", "C1", "C0", "C1"])
    ax.set_xticks(range(len(labels)), [label.replace(" block", "\nblock") for label in labels], fontsize=8)
    ax.set(ylabel="ps per multiply-add (min of rounds)",
           title=f"evaluation forward, {where}" + ("" if backend == "gpu" else " (the claim is about GPUs)"))
    plot = ctx.save_plot(fig, "A5_time_per_flop.png")
    rows = [[label, f"{macs / 1e6:,.1f}", f"{t_min * 1e3:.2f}", f"{t_med * 1e3:.2f}", f"{per_mac[label]:.3f}"]
            for label, (t_min, t_med, macs) in results.items()]
    return Outcome(
        verdict=verdict,
        measured=f"{where}: time per multiply-add, concat ÷ add: blocks {block_ratio:.2f}×, {names[1]} ÷ {names[0]} "
                 f"{network_ratio:.2f}×; whole forward {names[1]} ÷ {names[0]} {time_ratio:.2f}× (min of {rounds})",
        rule="on a GPU: confirmed when concat's side takes ≥ 1.1× add's time per multiply-add in both comparisons, "
             "partly in one, refuted in neither; on any other backend not measurable here (the claim is about GPU "
             "parallelism; `fusionjax-claims --out DIR --only A5` on a GPU machine measures it)",
        setup=f"XLA:{backend.upper()}, {jax.device_count()} device(s) ({jax.devices()[0].device_kind}), float32, "
              f"evaluation forward, alternating rounds (min of {rounds}) on a machine that may carry other jobs' load; "
              f"blocks (3×3 conv, add or concat with the input, 1×1 conv) on {tuple(block_input.shape)}, networks "
              f"at batch {batch}, {size}×{size}; multiply-adds from fusionjax.analysis.layer_costs",
        plots=(plot,),
        details=("" if backend == "gpu" else f"{where}, not the GPU the claim is about:\n\n")
        + markdown_table(["forward", "M multiply-adds", "min ms", "median ms", "ps per multiply-add"], rows),
    )


CLAIMS = [channel_counts, add_is_tied_concat, merge_costs, information, time_per_flop]
