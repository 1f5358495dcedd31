"""P1–P4 and P6, parameter and FLOP arithmetic, counted on the zoo's models from one abstract trace each
(``fusionjax.analysis.layer_costs``); P5, which trains, is in ``training_claims``."""

import functools

import jax
import jax.numpy as jnp
import numpy as np

import fusionjax
from fusionjax.analysis import layer_costs, parameter_count, xla_flops
from fusionjax.blocks import BasicBlock, Bottleneck
from fusionjax.claims import plots
from fusionjax.claims.base import CONFIRMED, PARTLY, REFUTED, Context, Outcome, claim, markdown_table

# torchvision 0.28's IMAGENET1K_V1 weights (each weight enum's meta: num_params, _ops = GFLOPS, acc@1), the
# figures its model documentation publishes; tests/test_claims.py checks them against the installed torchvision.
TORCHVISION = {
    "resnet18": (11_689_512, 1.814, 69.758),
    "resnet34": (21_797_672, 3.664, 73.314),
    "resnet50": (25_557_032, 4.089, 76.130),
    "resnet101": (44_549_160, 7.801, 77.374),
    "resnet152": (60_192_808, 11.514, 78.312),
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


def imagenet_costs(name: str, **overrides) -> tuple[int, int]:
    """(parameters, multiply-adds per 224×224 image) of a zoo model."""
    costs = layer_costs(fusionjax.create_model(name, **overrides), IMAGENET, train=False)
    return sum(c.params for c in costs), sum(c.macs for c in costs)


@claim("P1", "ResNet-18/34/50/101/152 have 11.7/21.8/25.6/44.5/60.2 M parameters, 1.8/3.6/4.1/7.9/11.6 GFLOPs and "
             "top-1 69.8/73.3/76.2/77.4/78.3 %")
def resnet_table(ctx: Context) -> Outcome:
    names = ctx.pick(list(CLAIMED), ["resnet18", "resnet50"])
    rows, params_ok, flops_ok, top1_ok, measured = [], [], [], [], {}
    for name in names:
        params, macs = imagenet_costs(name)
        v1 = imagenet_costs(name, block=functools.partial(Bottleneck, stride_in_1x1=True))[1] \
            if name not in ("resnet18", "resnet34") else macs
        measured[name] = (params, macs, v1)
        claimed_params, claimed_gflops, claimed_top1 = CLAIMED[name]
        published_top1 = TORCHVISION[name][2]
        params_ok.append(abs(params / 1e6 - claimed_params) <= 0.05)
        flops_ok.append(abs(macs / 1e9 - claimed_gflops) <= 0.05)
        top1_ok.append(abs(published_top1 - claimed_top1) <= 0.05)
        rows.append([name, claimed_params, f"{params / 1e6:.2f}", f"{TORCHVISION[name][0] / 1e6:.2f}", claimed_gflops,
                     f"{macs / 1e9:.3f}", f"{v1 / 1e9:.3f}", TORCHVISION[name][1], PAPER_GFLOPS[name], claimed_top1,
                     published_top1])
    flops_per_mac = None
    if not ctx.quick:
        model = fusionjax.create_model("resnet18")
        variables = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), IMAGENET)
        flops = xla_flops(functools.partial(model.apply, train=False), variables, IMAGENET)
        flops_per_mac = flops / measured["resnet18"][1]
    wrong_flops = [n for n, ok in zip(names, flops_ok) if not ok]
    wrong_top1 = [n for n, ok in zip(names, top1_ok) if not ok]
    verdict = REFUTED if not all(params_ok) else (CONFIRMED if not wrong_flops and not wrong_top1 else PARTLY)

    fig, (left, right) = plots.subplots(2)
    x = np.arange(len(names))
    left.bar(x - 0.2, [CLAIMED[n][1] for n in names], 0.4, label="claimed GFLOPs")
    left.bar(x + 0.2, [measured[n][1] / 1e9 for n in names], 0.4, label="measured G multiply-adds")
    left.set_xticks(x, names, fontsize=8)
    left.set(ylabel="billions per 224×224 image", title="compute")
    left.legend(fontsize=8)
    right.bar(x - 0.2, [CLAIMED[n][0] for n in names], 0.4, label="claimed")
    right.bar(x + 0.2, [measured[n][0] / 1e6 for n in names], 0.4, label="measured")
    right.set_xticks(x, names, fontsize=8)
    right.set(ylabel="million parameters", title="parameters")
    right.legend(fontsize=8)
    plot = plots.save(fig, ctx.plot_path("P1_resnet_table.png"))
    multiply_adds = (f"XLA counts {flops_per_mac:.2f} operations per counted multiply-add on ResNet-18"
                     if flops_per_mac else "XLA's count not taken in --quick")
    return Outcome(
        verdict=verdict,
        measured=f"parameters match for all; the 'FLOPs' are multiply-adds ({multiply_adds}), measured "
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


@claim("P2", "a basic block (two 3×3 convolutions at C channels) has 18C² + 2C parameters")
def basic_block_params(ctx: Context) -> Outcome:
    widths = ctx.pick([16, 32, 64, 128, 256, 512], [16, 64])
    rows, conv_ok, total_ok, extra = [], [], [], []
    for c in widths:
        conv, total = _block_params(BasicBlock(features=c), c)
        conv_ok.append(conv == 18 * c * c)
        total_ok.append(total == 18 * c * c + 2 * c)
        extra.append((total - 18 * c * c) / c)
        rows.append([c, f"{conv:,}", f"{18 * c * c:,}", f"{total:,}", f"{18 * c * c + 2 * c:,}",
                     f"{18 * c * c + 4 * c:,}"])
    verdict = CONFIRMED if all(total_ok) else (PARTLY if all(conv_ok) else REFUTED)
    fig, (ax,) = plots.subplots(1, width=6)
    ax.plot(widths, extra, "o-", label="measured (parameters − 18C²) / C")
    ax.axhline(2, color="C1", ls="--", label="claim: 2")
    ax.axhline(4, color="C2", ls=":", label="two BatchNorms' γ and β: 4")
    ax.set_xscale("log", base=2)
    ax.set(xlabel="channels C", ylabel="parameters beyond 18C², per channel", title="BasicBlock(C) → C")
    ax.legend(fontsize=8)
    plot = plots.save(fig, ctx.plot_path("P2_basic_block.png"))
    return Outcome(
        verdict=verdict,
        measured=f"convolutions: 18C² exactly; whole block: 18C² + {extra[0]:g}C (C = {', '.join(map(str, widths))})",
        rule="confirmed when the block has exactly 18C² + 2C parameters; partly when only its convolutions match "
             "18C²; refuted otherwise",
        setup="the zoo's BasicBlock (conv→BN→ReLU→conv→BN, identity shortcut), counted by layer_costs",
        plots=(plot,),
        details=markdown_table(["C", "conv weights", "18C²", "all parameters", "18C² + 2C (claim)",
                                "18C² + 4C"], rows) + "\n\n2C would be two convolution biases; a BatchNorm "
                "contributes γ and β per channel (and 2C running statistics that are not parameters).",
    )


@claim("P3", "a bottleneck 256→64→64→256 has 69,632 parameters against 1,179,648 for two 3×3 convs at 256 "
             "(5.9%); its 3×3 has 1/16 of the basic block's")
def bottleneck_params(ctx: Context) -> Outcome:
    def convs(block, channels):
        costs = layer_costs(block, jax.ShapeDtypeStruct((1, 8, 8, channels), jnp.float32), train=False)
        return {c.path: c.params for c in costs if c.kind == "conv"}

    bottleneck, basic = convs(Bottleneck(features=64), 256), convs(BasicBlock(features=256), 256)
    b_total, basic_total = sum(bottleneck.values()), sum(basic.values())
    ratio, three_by_three = b_total / basic_total, bottleneck["conv2"] / basic["conv1"]
    exact = b_total == 69_632 and basic_total == 1_179_648 and abs(three_by_three - 1 / 16) < 1e-12
    fig, (ax,) = plots.subplots(1, width=6)
    labels = [f"bottleneck {p}" for p in bottleneck] + [f"basic {p}" for p in basic]
    ax.barh(labels, list(bottleneck.values()) + list(basic.values()), color=["C0"] * 3 + ["C1"] * 2)
    ax.set_xscale("log")
    ax.set(xlabel="convolution weights", title=f"256 channels in and out: {ratio:.1%} of the basic block")
    plot = plots.save(fig, ctx.plot_path("P3_bottleneck.png"))
    rows = [[f"bottleneck {p}", f"{n:,}"] for p, n in bottleneck.items()] + [["bottleneck total", f"{b_total:,}"]]
    rows += [[f"basic {p}", f"{n:,}"] for p, n in basic.items()] + [["basic total", f"{basic_total:,}"]]
    return Outcome(
        verdict=CONFIRMED if exact else REFUTED,
        measured=f"bottleneck convolutions {b_total:,}, two 3×3 at 256: {basic_total:,} ({ratio:.2%}); 3×3 ratio "
                 f"1/{1 / three_by_three:g}",
        rule="confirmed when the three numbers are exact (convolution weights; BatchNorm adds 2 per channel: "
             "768 to the bottleneck, 1,024 to the basic block)",
        setup="the zoo's Bottleneck(features=64) and BasicBlock(features=256) on 256 channels, counted by layer_costs",
        plots=(plot,),
        details=markdown_table(["convolution", "weights"], rows),
    )


@claim("P4", "DenseNet-201 has about half the parameters of ResNet-50")
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
    ax.legend()
    plot = plots.save(fig, ctx.plot_path("P4_densenet_params.png"))
    return Outcome(
        verdict=CONFIRMED if 0.4 <= ratio <= 0.6 else REFUTED,
        measured=f"DenseNet-201 {counts['densenet201'] / 1e6:.2f} M ÷ ResNet-50 {counts['resnet50'] / 1e6:.2f} M = "
                 f"{ratio:.2f}{smallest}",
        rule="'about half' is a ratio in [0.4, 0.6]: confirmed inside, refuted outside",
        setup="zoo models (torchvision's architectures), parameters counted from one abstract initialization",
        plots=(plot,),
        details=markdown_table(["model", "parameters", "÷ ResNet-50"],
                               [[n, f"{counts[n]:,}", f"{counts[n] / counts['resnet50']:.2f}"] for n in names]),
    )


@claim("P6", "DenseNet-121 has 121 layers, with dense blocks of 6, 12, 24 and 16 layers")
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
    verdict = CONFIRMED if total == 121 and dense_layers == [6, 12, 24, 16] else REFUTED
    fig, (ax,) = plots.subplots(1, width=7)
    ax.bar(list(parts), list(parts.values()))
    ax.tick_params(axis="x", labelsize=7, rotation=45)
    ax.set(ylabel="weight layers (conv, dense)", title=f"DenseNet-121: {total} weight layers")
    plot = plots.save(fig, ctx.plot_path("P6_densenet121_layers.png"))
    return Outcome(
        verdict=verdict,
        measured=f"{total} weight layers = " + " + ".join(f"{n} {p}" for p, n in parts.items())
                 + f"; dense layers per block {dense_layers} (each a 1×1 and a 3×3 conv)",
        rule="confirmed when convolutions plus the classifier number 121 and the blocks hold 6, 12, 24, 16 "
             "dense layers",
        setup="the zoo's densenet121 (torchvision's), traced; BatchNorm, pooling and ReLU are not counted as "
              "layers, as in the name",
        plots=(plot,),
        details=markdown_table(["part", "weight layers"], [[p, n] for p, n in parts.items()]),
    )


CLAIMS = [resnet_table, basic_block_params, bottleneck_params, densenet201_vs_resnet50, densenet121_layers]
