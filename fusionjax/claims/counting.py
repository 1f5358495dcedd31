"""P1–P4 and P6–P8, parameter and FLOP arithmetic, counted on the zoo's models from one abstract trace each
(``fusionjax.analysis.layer_costs``), beside the figures their sources publish; P5 is in ``small_data``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import fusionjax
from fusionjax.analysis import layer_costs, parameter_count, xla_flops
from fusionjax.blocks import BasicBlock, Bottleneck
from fusionjax.claims import plots
from fusionjax.claims.base import CONFIRMED, PARTLY, REFUTED, Context, Outcome, claim, markdown_table
from fusionjax.models import DenseNet

# torchvision 0.28's IMAGENET1K_V1 weights (each weight enum's meta: num_params, _ops = GFLOPS, acc@1), the
# figures its model documentation publishes; tests/test_claims.py checks them against the installed torchvision.
TORCHVISION = {
    "resnet18": (11_689_512, 1.814, 69.758),
    "resnet34": (21_797_672, 3.664, 73.314),
    "resnet50": (25_557_032, 4.089, 76.130),
    "resnet101": (44_549_160, 7.801, 77.374),
    "resnet152": (60_192_808, 11.514, 78.312),
    "resnext50_32x4d": (25_028_904, 4.230, 77.618),
    "densenet121": (7_978_856, 2.834, 74.434),
    "densenet169": (14_149_480, 3.360, 75.600),
    "densenet201": (20_013_928, 4.291, 76.896),
    "densenet161": (28_681_000, 7.728, 77.138),
}
# He et al. 2016, Table 1 (ResNet v1, the stride in the first 1×1 of a bottleneck)
PAPER_GFLOPS = {"resnet18": 1.8, "resnet34": 3.6, "resnet50": 3.8, "resnet101": 7.6, "resnet152": 11.3}
CLAIMED = {  # parameters (M), GFLOPs, top-1 (%) as the claim states them
    "resnet18": (11.7, 1.8, 69.8), "resnet34": (21.8, 3.6, 73.3), "resnet50": (25.6, 4.1, 76.2),
    "resnet101": (44.5, 7.9, 77.4), "resnet152": (60.2, 11.6, 78.3),
}
IMAGENET = jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32)
LAST_DIGIT = 0.05 + 1e-9  # half a unit of a figure printed to one decimal; the epsilon absorbs float rounding


def imagenet_costs(name: str, **overrides) -> tuple[int, int]:
    """(parameters, multiply-adds per 224×224 image) of a zoo model."""
    costs = layer_costs(fusionjax.create_model(name, **overrides), IMAGENET, train=False)
    return sum(c.params for c in costs), sum(c.macs for c in costs)


def _zoo_costs(ctx: Context, name: str) -> tuple[int, int]:
    """``imagenet_costs(name)`` traced once per run: P1 and P8 both count ResNet-50."""
    return ctx.cached(("imagenet costs", name), lambda: imagenet_costs(name))


def _within_last_digit(measured, claimed) -> np.ndarray:
    return np.abs(np.asarray(measured, np.float64) - np.asarray(claimed, np.float64)) <= LAST_DIGIT


def decide_resnet_table(claimed_params, measured_params, claimed_gflops, measured_gmacs, claimed_top1,
                        published_top1) -> str:
    """Every figure must match the claim to its last digit (±0.05 M, G or points): confirmed when all
    parameters, GFLOPs and top-1 do; partly when every parameter count does but some GFLOPs or top-1 do not;
    refuted when any parameter count does not. GFLOPs are compared with counted multiply-adds, top-1 with
    torchvision's published figures (per-model arrays, millions, billions, percent)."""
    if not _within_last_digit(measured_params, claimed_params).all():
        return REFUTED
    rest = np.concatenate([_within_last_digit(measured_gmacs, claimed_gflops),
                           _within_last_digit(published_top1, claimed_top1)])
    return CONFIRMED if rest.all() else PARTLY


@claim("P1", "ResNet-18/34/50/101/152 have 11.7/21.8/25.6/44.5/60.2 M parameters, 1.8/3.6/4.1/7.9/11.6 GFLOPs and "
             "top-1 69.8/73.3/76.2/77.4/78.3 %", decide=decide_resnet_table)
def resnet_table(ctx: Context) -> Outcome:
    names = ctx.pick(list(CLAIMED), ["resnet18", "resnet50"])
    rows, measured = [], {}
    for name in names:
        params, macs = _zoo_costs(ctx, name)
        v1 = imagenet_costs(name, block=functools.partial(Bottleneck, stride_in_1x1=True))[1] \
            if name not in ("resnet18", "resnet34") else macs
        measured[name] = (params, macs, v1)
        claimed_params, claimed_gflops, claimed_top1 = CLAIMED[name]
        rows.append([name, claimed_params, f"{params / 1e6:.2f}", f"{TORCHVISION[name][0] / 1e6:.2f}", claimed_gflops,
                     f"{macs / 1e9:.3f}", f"{v1 / 1e9:.3f}", TORCHVISION[name][1], PAPER_GFLOPS[name], claimed_top1,
                     TORCHVISION[name][2]])
    numbers = dict(claimed_params=[CLAIMED[n][0] for n in names],
                   measured_params=[measured[n][0] / 1e6 for n in names],
                   claimed_gflops=[CLAIMED[n][1] for n in names], measured_gmacs=[measured[n][1] / 1e9 for n in names],
                   claimed_top1=[CLAIMED[n][2] for n in names], published_top1=[TORCHVISION[n][2] for n in names])
    verdict = decide_resnet_table(**numbers)
    flops_per_mac = None
    if not ctx.quick:
        model = fusionjax.create_model("resnet18")
        variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), IMAGENET)
        flops = xla_flops(functools.partial(model.apply, train=False), variables, IMAGENET)
        flops_per_mac = flops / measured["resnet18"][1]
    wrong_params = [n for n, ok in zip(names, _within_last_digit(numbers["measured_params"],
                                                                 numbers["claimed_params"])) if not ok]
    wrong_flops = [n for n, ok in zip(names, _within_last_digit(numbers["measured_gmacs"],
                                                                numbers["claimed_gflops"])) if not ok]
    wrong_top1 = [n for n, ok in zip(names, _within_last_digit(numbers["published_top1"],
                                                               numbers["claimed_top1"])) if not ok]

    fig, (left, right) = plots.subplots(2)
    x = np.arange(len(names))
    short = [n.replace("resnet", "R-") for n in names]  # five full names overlap under a 5-inch panel
    left.bar(x - 0.2, [CLAIMED[n][1] for n in names], 0.4, label="claimed GFLOPs")
    left.bar(x + 0.2, [measured[n][1] / 1e9 for n in names], 0.4, label="measured G multiply-adds")
    left.set_xticks(x, short, fontsize=8)
    left.set(ylabel="billions per 224×224 image", title="compute")
    left.legend(fontsize=8, loc="upper left")
    right.bar(x - 0.2, [CLAIMED[n][0] for n in names], 0.4, label="claimed")
    right.bar(x + 0.2, [measured[n][0] / 1e6 for n in names], 0.4, label="measured")
    right.set_xticks(x, short, fontsize=8)
    right.set(ylabel="million parameters", title="parameters")
    right.legend(fontsize=8, loc="upper left")
    plot = ctx.save_plot(fig, "P1_resnet_table.png")
    multiply_adds = (f"XLA counts {flops_per_mac:.2f} operations per counted multiply-add on ResNet-18"
                     if flops_per_mac else "XLA's count not taken in --quick")
    return Outcome(
        verdict=verdict,
        measured=("parameters match for all" if not wrong_params else f"parameters off for {', '.join(wrong_params)}")
                 + f"; the 'FLOPs' are multiply-adds ({multiply_adds}), measured "
                 + ", ".join(f"{measured[n][1] / 1e9:.2f}" for n in names) + " G"
                 + (f", off for {', '.join(wrong_flops)}" if wrong_flops else "")
                 + "; top-1 is not measurable here: torchvision publishes "
                 + "/".join(f"{TORCHVISION[n][2]:.2f}" for n in names)
                 + (f", the claim is off for {', '.join(wrong_top1)}" if wrong_top1 else ""),
        rule="each figure must match to the claim's last digit (±0.05): confirmed when all do, partly when the "
             "parameters do and some GFLOPs or top-1 do not, refuted when parameters do not; accuracy compared "
             "with torchvision's published figures (training on ImageNet is not possible here)",
        setup="zoo models traced at 224×224 (no computation); multiply-adds of convolutions and the classifier "
              "(torchvision's convention); 'v1' moves the stride to the first 1×1 as in He et al.'s original "
              "ResNet; published: torchvision 0.28 IMAGENET1K_V1 weights, He et al. 2016 Table 1",
        plots=(plot,),
        details=markdown_table(["model", "claimed M params", "measured M", "torchvision M", "claimed GFLOPs",
                                "measured G MACs (v1.5)", "v1", "torchvision GFLOPS", "paper GFLOPs",
                                "claimed top-1", "torchvision top-1"], rows),
    )


def _block_params(block, channels: int) -> tuple[int, int]:
    """(convolution weights, all parameters) of ``block`` applied to ``channels`` channels."""
    costs = layer_costs(block, jax.ShapeDtypeStruct((1, 8, 8, channels), jnp.float32), train=False)
    return sum(c.params for c in costs if c.kind == "conv"), sum(c.params for c in costs)


def decide_basic_block(widths, conv_weights, all_parameters) -> str:
    """For every width C: confirmed when the whole block has exactly 18C² + 2C parameters; partly when only its
    convolutions have exactly 18C² (the rest differs); refuted when the convolutions do not."""
    c = np.asarray(widths, np.int64)
    if not np.array_equal(np.asarray(conv_weights), 18 * c * c):
        return REFUTED
    return CONFIRMED if np.array_equal(np.asarray(all_parameters), 18 * c * c + 2 * c) else PARTLY


@claim("P2", "a basic block (two 3×3 convolutions at C channels) has 18C² + 2C parameters",
       decide=decide_basic_block)
def basic_block_params(ctx: Context) -> Outcome:
    widths = ctx.pick([16, 32, 64, 128, 256, 512], [16, 64])
    rows, convs, totals, extra = [], [], [], []
    for c in widths:
        conv, total = _block_params(BasicBlock(features=c), c)
        convs.append(conv)
        totals.append(total)
        extra.append((total - 18 * c * c) / c)
        rows.append([c, f"{conv:,}", f"{18 * c * c:,}", f"{total:,}", f"{18 * c * c + 2 * c:,}",
                     f"{18 * c * c + 4 * c:,}"])
    verdict = decide_basic_block(widths=widths, conv_weights=convs, all_parameters=totals)
    fig, (ax,) = plots.subplots(1, width=6)
    ax.plot(widths, extra, "o-", label="measured (parameters − 18C²) / C")
    ax.axhline(2, color="C1", ls="--", label="claim: 2")
    ax.axhline(4, color="C2", ls=":", label="two BatchNorms' γ and β: 4")
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [str(c) for c in widths])
    ax.set_ylim(0, 5)
    ax.set(xlabel="channels C", ylabel="parameters beyond 18C², per channel", title="BasicBlock(C) → C")
    ax.legend(fontsize=8, loc="lower right")
    plot = ctx.save_plot(fig, "P2_basic_block.png")
    return Outcome(
        verdict=verdict,
        measured=("convolutions: " + ("18C² exactly" if convs == [18 * c * c for c in widths]
                                      else "not 18C², " + ", ".join(f"{n:,}" for n in convs))
                  + f"; whole block: 18C² + {extra[0]:g}C (C = {', '.join(map(str, widths))})"),
        rule="confirmed when the block has exactly 18C² + 2C parameters; partly when only its convolutions match "
             "18C²; refuted otherwise",
        setup="the zoo's BasicBlock (conv→BN→ReLU→conv→BN, identity shortcut), counted by layer_costs",
        plots=(plot,),
        details=markdown_table(["C", "conv weights", "18C²", "all parameters", "18C² + 2C (claim)",
                                "18C² + 4C"], rows) + "\n\n2C would be two convolution biases; a BatchNorm "
                "contributes γ and β per channel (and 2C running statistics that are not parameters).",
    )


def decide_bottleneck(bottleneck_weights, basic_weights, three_by_three_ratio) -> str:
    """The claim's three numbers, each exact: the bottleneck's 69,632 convolution weights, the basic block's
    1,179,648, and its 3×3 at 1/16 of the basic block's. The verdict is confirmed when all three hold, partly
    when one or two do, refuted when none does."""
    holds = [bottleneck_weights == 69_632, basic_weights == 1_179_648, abs(three_by_three_ratio - 1 / 16) < 1e-12]
    return CONFIRMED if all(holds) else PARTLY if any(holds) else REFUTED


@claim("P3", "a bottleneck 256→64→64→256 has 69,632 parameters against 1,179,648 for two 3×3 convs at 256 "
             "(5.9%); its 3×3 has 1/16 of the basic block's", decide=decide_bottleneck)
def bottleneck_params(ctx: Context) -> Outcome:
    def convs(block, channels):
        costs = layer_costs(block, jax.ShapeDtypeStruct((1, 8, 8, channels), jnp.float32), train=False)
        return {c.path: c.params for c in costs if c.kind == "conv"}

    bottleneck, basic = convs(Bottleneck(features=64), 256), convs(BasicBlock(features=256), 256)
    b_total, basic_total = sum(bottleneck.values()), sum(basic.values())
    ratio, three_by_three = b_total / basic_total, bottleneck["conv2"] / basic["conv1"]
    verdict = decide_bottleneck(bottleneck_weights=b_total, basic_weights=basic_total,
                                three_by_three_ratio=three_by_three)
    fig, (ax,) = plots.subplots(1, width=6)
    labels = [f"bottleneck {p}" for p in bottleneck] + [f"basic {p}" for p in basic]
    ax.barh(labels, list(bottleneck.values()) + list(basic.values()), color=["C0"] * 3 + ["C1"] * 2)
    ax.set_xscale("log")
    ax.set(xlabel="convolution weights", title=f"256 channels in and out: {ratio:.1%} of the basic block")
    plot = ctx.save_plot(fig, "P3_bottleneck.png")
    rows = [[f"bottleneck {p}", f"{n:,}"] for p, n in bottleneck.items()] + [["bottleneck total", f"{b_total:,}"]]
    rows += [[f"basic {p}", f"{n:,}"] for p, n in basic.items()] + [["basic total", f"{basic_total:,}"]]
    return Outcome(
        verdict=verdict,
        measured=f"bottleneck convolutions {b_total:,}, two 3×3 at 256: {basic_total:,} ({ratio:.2%}); 3×3 ratio "
                 f"1/{1 / three_by_three:g}",
        rule="each of the three numbers exact (convolution weights; BatchNorm adds 2 per channel: 768 to the "
             "bottleneck, 1,024 to the basic block): confirmed when all three are, partly when some are, refuted "
             "when none is",
        setup="the zoo's Bottleneck(features=64) and BasicBlock(features=256) on 256 channels, counted by layer_costs",
        plots=(plot,),
        details=markdown_table(["convolution", "weights"], rows),
    )


def decide_about_half(densenet201_params, resnet50_params) -> str:
    """'About half' is a ratio DenseNet-201 ÷ ResNet-50 in [0.4, 0.6] (half, ± a fifth of it): confirmed
    inside, refuted outside."""
    return CONFIRMED if 0.4 <= densenet201_params / resnet50_params <= 0.6 else REFUTED


@claim("P4", "DenseNet-201 has about half the parameters of ResNet-50", decide=decide_about_half)
def densenet201_vs_resnet50(ctx: Context) -> Outcome:
    names = ctx.pick(["resnet50", "densenet121", "densenet169", "densenet201", "densenet161"],
                     ["resnet50", "densenet201"])
    counts = {}
    for name in names:
        model = fusionjax.create_model(name)
        counts[name] = parameter_count(jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0),
                                                      IMAGENET)["params"])
    ratio = counts["densenet201"] / counts["resnet50"]
    smallest = (f"; DenseNet-121 ({counts['densenet121'] / 1e6:.2f} M) is "
                f"{counts['densenet121'] / counts['resnet50']:.2f}" if "densenet121" in counts else "")
    fig, (ax,) = plots.subplots(1, width=6)
    ax.bar(names, [counts[n] / 1e6 for n in names], color=["C0"] + ["C1"] * (len(names) - 1))
    ax.axhline(counts["resnet50"] / 2e6, color="k", ls="--", label="half of ResNet-50")
    ax.set(ylabel="million parameters", title="ImageNet models of the zoo (= torchvision's)")
    ax.tick_params(axis="x", labelsize=8)
    plots.legend_outside(ax)
    plot = ctx.save_plot(fig, "P4_densenet_params.png")
    return Outcome(
        verdict=decide_about_half(densenet201_params=counts["densenet201"], resnet50_params=counts["resnet50"]),
        measured=f"DenseNet-201 {counts['densenet201'] / 1e6:.2f} M ÷ ResNet-50 {counts['resnet50'] / 1e6:.2f} M = "
                 f"{ratio:.2f}{smallest}",
        rule="'about half' is a ratio in [0.4, 0.6]: confirmed inside, refuted outside",
        setup="zoo models (torchvision's architectures), parameters counted from one abstract initialization",
        plots=(plot,),
        details=markdown_table(["model", "parameters", "÷ ResNet-50"],
                               [[n, f"{counts[n]:,}", f"{counts[n] / counts['resnet50']:.2f}"] for n in names]),
    )


def decide_densenet121_layers(weight_layers, dense_layers_per_block) -> str:
    """The verdict is confirmed when the convolutions plus the classifier number 121 and the dense blocks hold
    6, 12, 24 and 16 layers; partly when one of the two holds; refuted when neither does."""
    holds = [weight_layers == 121, list(dense_layers_per_block) == [6, 12, 24, 16]]
    return CONFIRMED if all(holds) else PARTLY if any(holds) else REFUTED


@claim("P6", "DenseNet-121 has 121 layers, with dense blocks of 6, 12, 24 and 16 layers",
       decide=decide_densenet121_layers)
def densenet121_layers(ctx: Context) -> Outcome:
    costs = layer_costs(fusionjax.create_model("densenet121"), jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32),
                        train=False)
    weight_layers = [c for c in costs if c.kind in ("conv", "dense")]
    parts: dict[str, int] = {}
    for c in weight_layers:
        part = c.path.split("/")[0]
        parts[part] = parts.get(part, 0) + 1
    dense_layers = [len({c.path.split("/")[1] for c in weight_layers if c.path.startswith(f"denseblock{i}/")})
                    for i in range(1, 5)]
    total = len(weight_layers)
    fig, (ax,) = plots.subplots(1, width=7)
    ax.bar(list(parts), list(parts.values()))
    ax.tick_params(axis="x", labelsize=7, rotation=45)
    ax.set(ylabel="weight layers (conv, dense)", title=f"DenseNet-121: {total} weight layers")
    plot = ctx.save_plot(fig, "P6_densenet121_layers.png")
    return Outcome(
        verdict=decide_densenet121_layers(weight_layers=total, dense_layers_per_block=dense_layers),
        measured=f"{total} weight layers = " + " + ".join(f"{n} {p}" for p, n in parts.items())
                 + f"; dense layers per block {dense_layers} (each a 1×1 and a 3×3 conv)",
        rule="confirmed when convolutions plus the classifier number 121 and the blocks hold 6, 12, 24, 16 "
             "dense layers; partly when one of the two holds; refuted when neither does",
        setup="the zoo's densenet121 (torchvision's), traced; BatchNorm, pooling and ReLU are not counted as "
              "layers, as in the name",
        plots=(plot,),
        details=markdown_table(["part", "weight layers"], [[p, n] for p, n in parts.items()]),
    )


# Huang et al. 2017, Table 2: parameters (M) of CIFAR DenseNets with growth rate k = 12, as printed.
HUANG_TABLE2 = {("DenseNet", 40): 1.0, ("DenseNet", 100): 7.0, ("DenseNet-BC", 100): 0.8}
# (bottleneck, compression θ) per variant: -B puts a 1×1 conv to 4k maps before each 3×3, -C keeps θ = 0.5 of the
# channels at each transition.
VARIANTS = {"DenseNet": (False, 1.0), "DenseNet-B": (True, 1.0), "DenseNet-C": (False, 0.5),
            "DenseNet-BC": (True, 0.5)}
CIFAR = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)


def cifar_densenet(depth: int, growth_rate: int, bottleneck: bool, compression: float,
                   num_classes: int = 10) -> DenseNet:
    """Huang et al. 2017's CIFAR DenseNet of depth L, as the zoo's ``DenseNet(stem='cifar')``.

    L counts the convolutions and the classifier (stem, two transitions, classifier: 4), so the three dense
    blocks hold (L − 4)/3 layers of one 3×3 conv, or (L − 4)/6 layers of a 1×1 and a 3×3 with the bottleneck.
    The stem conv has 16 maps, 2k for DenseNet-BC (the paper's implementation details state these two).
    """
    convs_per_layer = 2 if bottleneck else 1
    if depth < 4 + 3 * convs_per_layer or (depth - 4) % (3 * convs_per_layer):
        raise ValueError(f"a CIFAR DenseNet{'-B' if bottleneck else ''} has {3 * convs_per_layer}n + 4 layers, "
                         f"got {depth}.")
    n = (depth - 4) // (3 * convs_per_layer)
    return DenseNet(block_config=(n, n, n), growth_rate=growth_rate, bn_size=4 if bottleneck else None,
                    compression=compression, stem="cifar", in_channels=3, num_classes=num_classes,
                    num_init_features=2 * growth_rate if bottleneck and compression < 1 else 16)


def decide_densenet_bc(counted_millions, published_millions, parameter_factor, mac_factor) -> str:
    """Each of Huang et al.'s Table 2 parameter counts must match the zoo's count of the same network to the
    table's last digit (±0.05 M), and bottleneck with compression must shrink both parameters and multiply-adds
    (DenseNet ÷ DenseNet-BC at the same depth, ``parameter_factor`` and ``mac_factor``, above 1). The verdict
    is confirmed when every figure matches and both shrink; partly when both shrink and only some figures match;
    refuted when no figure matches or either does not shrink."""
    matches = _within_last_digit(counted_millions, published_millions)
    if not matches.any() or parameter_factor <= 1 or mac_factor <= 1:
        return REFUTED
    return CONFIRMED if matches.all() else PARTLY


@claim("P7", "DenseNet-BC's bottleneck (a 1×1 conv to 4k maps before each 3×3) and compression (θ = 0.5 at "
             "transitions) cut parameters and FLOPs: DenseNet (L=100, k=12) has 7.0 M parameters, DenseNet-BC "
             "(L=100, k=12) 0.8 M, DenseNet (L=40, k=12) 1.0 M", decide=decide_densenet_bc)
def densenet_bc_savings(ctx: Context) -> Outcome:
    depths, growth_rate = ctx.pick((40, 100), (40,)), 12
    costs = {}
    for depth in depths:
        for variant, (bottleneck, compression) in VARIANTS.items():
            layers = layer_costs(cifar_densenet(depth, growth_rate, bottleneck, compression), CIFAR, train=False)
            costs[variant, depth] = (sum(c.params for c in layers), sum(c.macs for c in layers))
    deepest = depths[-1]
    factors = {v: (costs["DenseNet", deepest][0] / costs[v, deepest][0],
                   costs["DenseNet", deepest][1] / costs[v, deepest][1]) for v in VARIANTS}
    published = {key: figure for key, figure in HUANG_TABLE2.items() if key in costs}
    verdict = decide_densenet_bc(counted_millions=[costs[key][0] / 1e6 for key in published],
                                 published_millions=list(published.values()),
                                 parameter_factor=factors["DenseNet-BC"][0], mac_factor=factors["DenseNet-BC"][1])
    paper_factor = (f"; Table 2's 7.0 / 0.8 = {7.0 / 0.8:.2f} (7.05/0.75 to 6.95/0.85 = "
                    f"{7.05 / 0.75:.1f}–{6.95 / 0.85:.1f} as printed)" if ("DenseNet-BC", 100) in published else "")

    fig, axes = plots.subplots(2, width=5.2)
    x = np.arange(len(VARIANTS))
    width = 0.8 / len(depths)
    for ax, index, unit, what in ((axes[0], 0, 1e6, "million parameters"),
                                  (axes[1], 1, 1e6, "million multiply-adds per 32×32 image")):
        for j, depth in enumerate(depths):
            ax.bar(x + (j - (len(depths) - 1) / 2) * width, [costs[v, depth][index] / unit for v in VARIANTS],
                   width, label=f"L = {depth}, k = {growth_rate}", color=f"C{j}")
        ax.set_xticks(x, [v.replace("DenseNet", "DN") for v in VARIANTS])  # full names overlap at this width
        # 0.18 to 7 M: the BC variants would vanish on a linear axis; no count here is 0
        plots.log_axis_ticks(ax, [0.1, 0.2, 0.5, 1, 2, 5, 10] if index == 0 else [50, 100, 200, 500, 1000, 2000],
                       axis="y")
        ax.set(ylabel=what, title=("parameters" if index == 0 else "compute") + " (zoo count)")
    for (variant, depth), figure in published.items():
        j = depths.index(depth)
        axes[0].plot(list(VARIANTS).index(variant) + (j - (len(depths) - 1) / 2) * width, figure, "kx",
                     markersize=9, mew=2, label="Huang et al. 2017, Table 2" if (variant, depth) == next(
                         iter(published)) else None)
    plots.legend_outside(axes[0])
    plots.legend_outside(axes[1])
    plot = ctx.save_plot(fig, "P7_densenet_bc.png")

    rows = []
    for (variant, depth), (params, macs) in costs.items():
        bottleneck, compression = VARIANTS[variant]
        rows.append([variant, depth, (depth - 4) // (6 if bottleneck else 3), compression,
                     f"{params / 1e6:.3f}", HUANG_TABLE2.get((variant, depth), "—"), f"{macs / 1e6:.1f}",
                     f"{costs['DenseNet', depth][0] / params:.2f}", f"{costs['DenseNet', depth][1] / macs:.2f}"])
    return Outcome(
        verdict=verdict,
        measured="zoo vs Table 2: " + ", ".join(f"{v} (L={d}) {costs[v, d][0] / 1e6:.2f} M ({figure})"
                                                for (v, d), figure in published.items())
                 + f"; at L={deepest} DenseNet ÷ variant, parameters / multiply-adds: "
                 + ", ".join(f"{v[len('DenseNet'):]} {factors[v][0]:.2f} / {factors[v][1]:.2f}"
                             for v in list(VARIANTS)[1:]) + paper_factor,
        rule="each Table 2 figure must match the zoo's count to its last digit (±0.05 M), and DenseNet ÷ "
             f"DenseNet-BC at L={deepest} must exceed 1 for parameters and multiply-adds: confirmed when all "
             "match and both shrink, partly when both shrink and some match, refuted when none matches or "
             "either does not shrink",
        setup=f"the zoo's DenseNet(stem='cifar') at 32×32×3, 10 classes, k = {growth_rate}, traced (no "
              "computation); L counts convolutions and the classifier: (L−4)/3 layers per block without the "
              "bottleneck, (L−4)/6 with it; stem 16 maps (2k for DenseNet-BC); -B: 1×1 conv to 4k maps, -C: "
              "θ = 0.5; published: Huang et al. 2017 (DenseNet), Table 2, which states parameters, not FLOPs",
        plots=(plot,),
        details=markdown_table(["variant", "L", "layers per block", "θ", "parameters (M)", "Table 2 (M)",
                                "M multiply-adds", "DenseNet ÷ (parameters)", "DenseNet ÷ (multiply-adds)"], rows),
    )


# Xie et al. 2017 (ResNeXt), Table 3: ImageNet-1K top-1 error (%), 224×224 single crop.
XIE_TABLE3_ERROR = {"resnet50": 23.9, "resnext50_32x4d": 22.2}
SOURCE_TOP1, SOURCE_GAIN = 77.8, 1.6  # the claim's source: ResNeXt-50's top-1 and its gain over ResNet-50
SAME_COST = 0.05


def _source_agrees(figure: float, published: dict[str, float]) -> str:
    """Which published figures ``figure`` matches to its last digit, in words."""
    agreeing = [name for name, value in published.items() if _within_last_digit(value, figure)]
    return ("is " + " and ".join(f"{name} figure" for name in agreeing) if agreeing
            else "matches neither (" + ", ".join(f"{name} {value:.2f}" for name, value in published.items()) + ")")


def decide_resnext(params_ratio, macs_ratio, torchvision_gain, paper_gain) -> str:
    """'Same cost': ResNeXt-50's parameters and multiply-adds each within 5% of ResNet-50's (ratios
    ``params_ratio``, ``macs_ratio``): about twice the 2–3% that Xie et al. call the same complexity (Table 1:
    25.0 vs 25.5 M parameters, 4.2 vs 4.1 GFLOPs), far from the next ResNet's +74%. 'Higher top-1': ResNeXt-50's
    published top-1 above ResNet-50's both in torchvision's IMAGENET1K_V1 weights and in Xie et al.'s Table 3
    (gains in points). The verdict is confirmed when both hold, partly when one does, refuted when neither does."""
    same_cost = abs(params_ratio - 1) <= SAME_COST and abs(macs_ratio - 1) <= SAME_COST
    higher = torchvision_gain > 0 and paper_gain > 0
    return CONFIRMED if same_cost and higher else PARTLY if same_cost or higher else REFUTED


@claim("P8", "ResNeXt-50 (32×4d) has the parameters and FLOPs of ResNet-50 and a higher ImageNet top-1",
       decide=decide_resnext)
def resnext_vs_resnet(ctx: Context) -> Outcome:
    names = ("resnet50", "resnext50_32x4d")
    (res_params, res_macs), (next_params, next_macs) = (_zoo_costs(ctx, name) for name in names)
    tv_top1 = [TORCHVISION[name][2] for name in names]
    paper_top1 = [100 - XIE_TABLE3_ERROR[name] for name in names]
    numbers = dict(params_ratio=next_params / res_params, macs_ratio=next_macs / res_macs,
                   torchvision_gain=tv_top1[1] - tv_top1[0], paper_gain=paper_top1[1] - paper_top1[0])
    verdict = decide_resnext(**numbers)

    fig, (left, right) = plots.subplots(2, width=5.2)
    left.axhspan(1 - SAME_COST, 1 + SAME_COST, color="0.9", label=f"±{SAME_COST:.0%}: same cost")
    left.bar([0, 1], [numbers["params_ratio"], numbers["macs_ratio"]], 0.5, color="C1")
    left.axhline(1, color="k", lw=0.8)
    left.set_xticks([0, 1], ["parameters", "multiply-adds"])
    left.set_ylim(0.8, 1.15)  # the ±5% band must be readable; both ratios lie inside this range
    left.set(ylabel="ResNeXt-50 ÷ ResNet-50", title="cost at 224×224 (zoo count)")
    left.legend(fontsize=8, loc="upper center")
    sources = ["torchvision\nIMAGENET1K_V1", "Xie et al. 2017\nTable 3", "the claim's\nsource"]
    right.plot([0, 1], [tv_top1[0], paper_top1[0]], "o", color="C0", label="ResNet-50")
    right.plot([0, 1, 2], [tv_top1[1], paper_top1[1], SOURCE_TOP1], "s", color="C1", label="ResNeXt-50 (32×4d)")
    right.plot([2], [SOURCE_TOP1 - SOURCE_GAIN], "o", mfc="none", color="C0", label="ResNet-50 implied by +1.6")
    right.set_xticks([0, 1, 2], sources, fontsize=8)
    right.set_xlim(-0.5, 2.5)
    right.set(ylabel="ImageNet top-1 (%)", title="published accuracy")
    plots.legend_outside(right)
    plot = ctx.save_plot(fig, "P8_resnext50.png")

    rows = [[name, f"{params:,}", f"{macs / 1e9:.3f}", f"{TORCHVISION[name][0]:,}", TORCHVISION[name][1],
             TORCHVISION[name][2], f"{100 - XIE_TABLE3_ERROR[name]:.1f}"]
            for name, (params, macs) in zip(names, ((res_params, res_macs), (next_params, next_macs)))]
    return Outcome(
        verdict=verdict,
        measured=f"ResNeXt-50 ÷ ResNet-50: parameters {numbers['params_ratio']:.3f}, multiply-adds "
                 f"{numbers['macs_ratio']:.3f}; top-1 {tv_top1[1]:.2f} vs {tv_top1[0]:.2f} "
                 f"({numbers['torchvision_gain']:+.2f}) in torchvision, {paper_top1[1]:.1f} vs {paper_top1[0]:.1f} "
                 f"({numbers['paper_gain']:+.1f}) in Xie et al. Table 3; the source's {SOURCE_TOP1} "
                 + _source_agrees(SOURCE_TOP1, {"the paper's": paper_top1[1], "torchvision's": tv_top1[1]})
                 + f", its +{SOURCE_GAIN} "
                 + _source_agrees(SOURCE_GAIN, {"the paper's": numbers["paper_gain"],
                                                "torchvision's": numbers["torchvision_gain"]}),
        rule=f"'same cost': parameters and multiply-adds each within {SAME_COST:.0%} of ResNet-50's (about twice "
             "the 2–3% Xie et al. call the same complexity in Table 1); 'higher top-1': ResNeXt-50 above "
             "ResNet-50 in both torchvision's and the paper's published figures; confirmed when both hold, "
             "partly when one does, refuted when neither does",
        setup="the zoo's resnet50 and resnext50_32x4d traced at 224×224 (no computation), multiply-adds of "
              "convolutions and the classifier; top-1 published (not measurable here): torchvision 0.28 "
              "IMAGENET1K_V1 weights and Xie et al. 2017 (ResNeXt), Table 3 (ResNet-50 23.9%, ResNeXt-50 "
              "22.2% top-1 error)",
        plots=(plot,),
        details=markdown_table(["model", "parameters (zoo)", "G multiply-adds (zoo)", "torchvision parameters",
                                "torchvision GFLOPS", "torchvision top-1", "Xie et al. top-1"], rows),
    )


CLAIMS = [resnet_table, basic_block_params, bottleneck_params, densenet201_vs_resnet50, densenet121_layers,
          densenet_bc_savings, resnext_vs_resnet]
