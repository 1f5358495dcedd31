"""A6–A9, what the architectures' papers say they do, read off the zoo's models: FPN's merge against torchvision's
FPN, and a DenseNet's blocks, connections and layers traced from DenseNet-121 and the original DenseNet."""

import dataclasses

import flax.linen as nn
import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
from jax.ad_checkpoint import checkpoint_name

import fusionjax
from fusionjax.analysis import concat_kernel_for_add, parameter_count
from fusionjax.blocks import DenseBlock, DenseLayer, Transition
from fusionjax.claims import nets, plots
from fusionjax.claims.base import (CONFIRMED, NOT_MEASURABLE, PARTLY, REFUTED, Context, Outcome, claim,
                                   markdown_table)
from fusionjax.export import program
from fusionjax.fusion import FPN
from fusionjax.layers import BatchNorm, Conv2d
from fusionjax.models import DenseNet

# float32 outputs of a 1×1 conv, a sum and a 3×3 conv over ≤ 9·64 terms, summed in PyTorch's and XLA's orders:
# differences of a few 1e-7 relative to the largest output; an architecture that differs is off by O(1).
SAME_OUTPUT = 1e-5


def decide_fpn_merge(*, reference_available: bool, add_difference: float, concat_difference: float) -> str:
    """Verdict on "FPN merges by concatenation", from torchvision's FPN with the same weights: confirmed when
    fusionjax's concat FPN reproduces it (max relative difference ≤ 1e-5) and the add FPN does not; refuted when
    the add FPN reproduces it and the concat FPN does not; not measurable here without torchvision, or when both
    or neither reproduce it (the comparison cannot tell the merges apart)."""
    if not reference_available:
        return NOT_MEASURABLE
    add_same, concat_same = add_difference <= SAME_OUTPUT, concat_difference <= SAME_OUTPUT
    if add_same == concat_same:
        return NOT_MEASURABLE
    return CONFIRMED if concat_same else REFUTED


def _torch_fpn_weights_into(params: dict, reference) -> dict:
    """``params`` of fusionjax's FPN with every conv that torchvision's FPN also has copied from ``reference``
    (OIHW → HWIO); a concat FPN's extra ``merge`` convs keep their own values."""
    def conv(block) -> dict:
        layer = block[0]
        return {"kernel": jnp.asarray(layer.weight.detach().numpy().transpose(2, 3, 1, 0)),
                "bias": jnp.asarray(layer.bias.detach().numpy())}

    copied = jax.tree.map(lambda x: x, params)
    top = len(reference.inner_blocks) - 1
    copied["top_lateral"] = conv(reference.inner_blocks[top])
    for i in range(top):
        copied[f"merge{i}"] = {**copied[f"merge{i}"], "lateral": conv(reference.inner_blocks[i])}
    for i in range(top + 1):
        copied[f"smooth{i}"] = conv(reference.layer_blocks[i])
    return copied


def fpn_against_torchvision(in_channels: tuple[int, ...], features: int, size: int) -> dict | None:
    """fusionjax's FPN in each mode against torchvision.ops.FeaturePyramidNetwork with the same weights, on random
    N(0,1) pyramid levels (finest first, halving): max |difference| / max |reference| over all levels per mode,
    and the parameter counts. None when torchvision is not installed."""
    try:
        import torch
        from fusionjax.torch_compat import import_torchvision

        torchvision = import_torchvision()
    except ImportError:
        return None
    torch.manual_seed(0)
    reference = torchvision.ops.FeaturePyramidNetwork(list(in_channels), features).eval()
    with torch.no_grad():  # torchvision starts biases at 0; random ones make the comparison see them too
        for parameter in reference.parameters():
            if parameter.ndim == 1:
                parameter.normal_()
    rng = np.random.default_rng(0)
    levels = [rng.standard_normal((2, size >> i, size >> i, c)).astype(np.float32) for i, c in enumerate(in_channels)]
    with torch.no_grad():
        expected = reference({str(i): torch.from_numpy(x.transpose(0, 3, 1, 2)) for i, x in enumerate(levels)})
    expected = [y.numpy().transpose(0, 2, 3, 1) for y in expected.values()]
    scale = max(np.abs(y).max() for y in expected)

    def difference(module: FPN, params: dict) -> float:
        outputs = module.apply({"params": params}, [jnp.asarray(x) for x in levels])
        return max(float(np.abs(np.asarray(y) - e).max()) for y, e in zip(outputs, expected)) / scale

    results = {"torchvision": {"params": sum(p.numel() for p in reference.parameters())}}
    params = {}
    for mode in ("add", "concat"):
        module = FPN(features, mode=mode)
        params[mode] = _torch_fpn_weights_into(module.init(jax.random.key(0), levels)["params"], reference)
        results[mode] = {"params": parameter_count(params[mode]), "difference": difference(module, params[mode])}
    # concat whose merge is fixed to [I; I], no bias: the sum of the two halves (A2), not a learned merge
    identity = concat_kernel_for_add(jnp.eye(features)[None, None], 2)
    tied = {name: {**value, "merge": {"kernel": identity, "bias": jnp.zeros(features)}} if name.startswith("merge")
            else value for name, value in params["concat"].items()}
    results["concat, merge fixed to [I; I]"] = {"params": parameter_count(tied),
                                                "difference": difference(FPN(features, mode="concat"), tied)}
    return results


@claim("A6", "FPN merges its top-down and lateral maps by concatenation (a source calls FPN a concat architecture)",
       decide=decide_fpn_merge)
def fpn_merge(ctx: Context) -> Outcome:
    in_channels, features, size = ctx.pick(((64, 128, 256, 512), 64, 32), ((8, 16, 32), 16, 16))
    results = fpn_against_torchvision(in_channels, features, size)
    available = results is not None
    verdict = decide_fpn_merge(reference_available=available,
                               add_difference=results["add"]["difference"] if available else float("nan"),
                               concat_difference=results["concat"]["difference"] if available else float("nan"))
    fig, (left, right) = plots.subplots(2, width=5.5)
    if available:
        modes = [mode for mode in results if mode != "torchvision"]
        left.bar(range(len(modes)), [results[mode]["difference"] for mode in modes], color=["C0", "C1", "C2"])
        left.axhline(SAME_OUTPUT, color="k", ls="--")
        left.text(len(modes) - 0.55, SAME_OUTPUT, f"same output: ≤ {SAME_OUTPUT:g}", ha="right", va="bottom",
                  fontsize=8)
        left.set_xticks(range(len(modes)), ["add", "concat\n(its merge conv)", "concat\n(merge = [I; I])"],
                        fontsize=8)
        for i, mode in enumerate(modes):  # a bar of height 0 is invisible: print every value
            left.text(i, results[mode]["difference"], f"{results[mode]['difference']:.1e}", ha="center",
                      va="bottom", fontsize=8)
        left.set(ylabel="max rel. difference", title="outputs vs torchvision, same weights")
        plots.log_axis_with_zero(left, 1e-9)
        left.set_ylim(top=100 * max(results[mode]["difference"] for mode in modes))  # room for the tallest label
        labels = ["torchvision", "add", "concat"]
        right.bar(range(3), [results[label]["params"] for label in labels], color=["k", "C0", "C1"])
        right.set_xticks(range(3), ["torchvision\nFPN", "fusionjax\nadd", "fusionjax\nconcat"], fontsize=8)
        right.set(ylabel="parameters", title="parameters of the pyramid")
    else:
        for ax in (left, right):
            ax.text(0.5, 0.5, "torchvision not installed:\nno reference FPN", ha="center", va="center")
            ax.set_axis_off()
    plot = ctx.save_plot(fig, "A6_fpn_merge.png")
    pyramid = f"levels of {in_channels} channels at {size}…{size >> (len(in_channels) - 1)} px, batch 2, N(0,1)"
    if not available:
        measured = "torchvision is not installed: no reference FPN to compare with"
        details = ""
    else:
        measured = (f"against torchvision's FPN with the same weights: add differs by "
                    f"{results['add']['difference']:.1e}, concat (with its merge conv) by "
                    f"{results['concat']['difference']:.2f} of the largest output; parameters: torchvision "
                    f"{results['torchvision']['params']:,}, add {results['add']['params']:,}, concat "
                    f"{results['concat']['params']:,}")
        details = markdown_table(["FPN", "parameters", "max relative difference to torchvision"],
                                 [[label, f"{r['params']:,}", f"{r['difference']:.2e}" if "difference" in r else "—"]
                                  for label, r in results.items()])
    return Outcome(
        verdict=verdict,
        measured=measured,
        rule="refuted when fusionjax's add FPN reproduces torchvision's (max relative difference ≤ 1e-5, float32 "
             "rounding in two summation orders) and the concat FPN does not; confirmed when the reverse; not "
             "measurable here without torchvision or when both or neither reproduce it",
        setup=f"Lin et al. 2017 (FPN, §3): a 1×1 lateral conv, the 2× nearest-upsampled coarser map added "
              f"element-wise, then a 3×3 conv; reference: torchvision.ops.FeaturePyramidNetwork (torchvision's "
              f"detection models' FPN; needs the 'torch' extra, else not measurable here), random biases; "
              f"fusionjax.fusion.FPN (features={features}) with torchvision's convs copied in, the concat FPN's extra "
              f"1×1 merge convs at their initialization; {pyramid}",
        plots=(plot,),
        details=details,
    )


@dataclasses.dataclass(frozen=True)
class DenseLayerReading:
    """One dense layer as its traced forward computes it: where its inputs come from, their width, its operations."""

    block: int
    index: int  # 1-based within the block
    producers: tuple[str, ...]  # the module path (or 'stem') that produced each map it reads
    input_width: int
    operations: tuple[str, ...]  # e.g. ('BN', 'ReLU', '1×1 conv→128', 'BN', 'ReLU', '3×3 conv→32')


@dataclasses.dataclass(frozen=True)
class DenseNetReading:
    """A DenseNet read off its traced forward: its dense layers, transitions and the dependence between blocks."""

    name: str
    layers: tuple[DenseLayerReading, ...]
    transitions: tuple[tuple[int, int], ...]  # (input width, output width) of each transition
    # (a, b, b computed from a at all, b computed from a with the transition into b held fixed) per blocks a < b
    dependence: tuple[tuple[int, int, bool, bool], ...]


def _block_of(path: str) -> int | None:
    """1-based dense block of a module path (``denseblock3/denselayer2/...``), or None outside the blocks."""
    head = path.split("/")[0]
    return int(head.removeprefix("denseblock")) if head.startswith("denseblock") else None


def trace_densenet(model: nn.Module, image_size: int) -> tuple[jex.ClosedJaxpr, list[tuple]]:
    """``model``'s initialization forward (evaluation mode, one image) as a program of JAX primitives, traced with
    ``jax.make_jaxpr`` in the layers' reference mode: nothing is compiled or run. In the program every norm's
    output (``norm:PATH``), every conv's input (``conv:PATH``) and every dense block's and transition's output
    (``out:PATH``) carry a name (``checkpoint_name``, an identity); the calls of dense layers, norms, convs and
    transitions are returned in the order they finished (a module's submodules before the module)."""
    produced, calls, keep = {}, [], []  # keep: no id is reused while tracing

    def interceptor(next_fun, args, kwargs, context):
        module, path = context.module, "/".join(context.module.path)
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if isinstance(module, Conv2d):
            args = (checkpoint_name(args[0], f"conv:{path}"), *args[1:])
        out = next_fun(*args, **kwargs)
        if isinstance(module, DenseLayer):
            inputs = [args[0]] if isinstance(args[0], jax.Array) else list(args[0])
            calls.append(("layer", path, tuple(produced.get(id(x), "stem") for x in inputs),
                          sum(x.shape[-1] for x in inputs)))
        elif isinstance(module, BatchNorm):
            if not (calls and calls[-1][1] == path):  # once, not again for the call of flax's BatchNorm inside
                calls.append(("norm", path))
            out = checkpoint_name(out, f"norm:{path}")
        elif isinstance(module, Conv2d):
            calls.append(("conv", path, f"{module.kernel_size}×{module.kernel_size} conv→{module.features}"))
        elif isinstance(module, Transition):
            calls.append(("transition", path, args[0].shape[-1], out.shape[-1]))
        if isinstance(module, (Transition, DenseBlock)):
            out = checkpoint_name(out, f"out:{path}")
        if isinstance(module, (DenseLayer, Transition, DenseBlock)):
            produced[id(out)] = path
        keep.append(out)
        return out

    def forward(images: jax.Array):
        with nn.intercept_methods(interceptor):
            return model.init(jax.random.key(0), images, train=False)

    closed = program.trace(forward, jax.ShapeDtypeStruct((1, image_size, image_size, model.in_channels), jnp.float32))
    return closed, calls


def _operations(eqn: jex.JaxprEqn) -> list[str]:
    """The first-order primitives ``eqn`` computes, calls that wrap others (jit, custom_jvp_call) inlined; ``max
    0`` names a maximum with the constant 0, the whole of ``jax.nn.relu``."""
    inner = list(jex.jaxprs_in_params(eqn.params))
    if inner:
        return [name for jaxpr in inner for inner_eqn in jaxpr.eqns for name in _operations(inner_eqn)]
    if eqn.primitive.name == "max" and any(isinstance(v, jex.Literal) and v.val == 0 for v in eqn.invars):
        return ["max 0"]
    return [eqn.primitive.name]


def _from_norm(closed: jex.ClosedJaxpr) -> dict[str, tuple[str, ...] | None]:
    """Per conv path: the operations between the nearest norm's output and the conv's input, walking back the
    program through one-input operations; None when no norm's output is reached that way."""
    producers = {var: eqn for eqn in closed.jaxpr.eqns for var in eqn.outvars}

    def walk(var) -> tuple[str, ...] | None:
        operations = []
        while var in producers:
            eqn = producers[var]
            if eqn.primitive.name == "name" and eqn.params["name"].startswith("norm:"):
                return tuple(operations)
            inputs = [v for v in eqn.invars if not isinstance(v, jex.Literal)]
            if len(inputs) != 1:
                return None
            if eqn.primitive.name != "name":
                operations[:0] = _operations(eqn)
            var = inputs[0]
        return None

    return {eqn.params["name"].removeprefix("conv:"): walk(eqn.invars[0]) for eqn in closed.jaxpr.eqns
            if eqn.primitive.name == "name" and eqn.params["name"].startswith("conv:")}


def block_dependence(closed: jex.ClosedJaxpr) -> list[tuple[int, int, bool, bool]]:
    """For each pair of dense blocks a < b of a traced program (``trace_densenet``): whether block b's output is
    computed from block a's output at all, and whether it still is with the transition into b held fixed (its
    output a constant). Dependence is the program's data flow, a call that wraps others counting as depending on
    all its inputs: a superset of what can change numerically, so "not computed from" holds for every weight and
    input."""
    eqns = closed.jaxpr.eqns
    marked = {eqn.params["name"]: i for i, eqn in enumerate(eqns) if eqn.primitive.name == "name"}
    count = sum(name.startswith("out:denseblock") for name in marked)

    def reaches(a: int, b: int, held: int | None) -> bool:
        start, target = marked[f"out:denseblock{a}"], marked[f"out:denseblock{b}"]
        tainted = set(eqns[start].outvars)
        for index in range(start + 1, target + 1):
            if index != held and any(v in tainted for v in eqns[index].invars if not isinstance(v, jex.Literal)):
                tainted.update(eqns[index].outvars)
        return eqns[target].outvars[0] in tainted

    return [(a, b, reaches(a, b, None), reaches(a, b, marked[f"out:transition{b - 1}"]))
            for a in range(1, count) for b in range(a + 1, count + 1)]


def read_densenet(name: str, model: DenseNet, image_size: int) -> DenseNetReading:
    """What every dense layer of ``model`` reads and computes, and how its blocks depend on each other, read off
    its traced program (``trace_densenet``). A ReLU is recorded before a conv when the program computes the conv's
    input as max(·, 0) of the preceding norm's output and nothing else."""
    if model.memory_efficient:  # its layers' norms and convs sit inside rematerialized sub-programs
        raise ValueError("read_densenet reads the top level of the traced program; trace memory_efficient=False.")
    closed, calls = trace_densenet(model, image_size)
    from_norm = _from_norm(closed)
    layers, transitions, operations = [], [], {}
    for call in calls:  # post-order: a layer's norms and convs come before the layer itself
        kind, path = call[:2]
        owner = "/".join(path.split("/")[:2])
        if kind == "norm":
            operations.setdefault(owner, []).append("BN")
        elif kind == "conv":
            between = from_norm[path] or ()
            activation = ["ReLU"] if between == ("max 0",) else [" · ".join(between)] * bool(between)
            operations.setdefault(owner, []).extend([*activation, call[2]])
        elif kind == "transition":
            transitions.append(call[2:])
        else:
            layers.append(DenseLayerReading(_block_of(path), int(path.split("/")[1].removeprefix("denselayer")),
                                            call[2], call[3], tuple(operations.get(path, ()))))
    return DenseNetReading(name, tuple(layers), tuple(transitions), tuple(block_dependence(closed)))


def _models(ctx: Context) -> dict[str, tuple[DenseNet, str]]:
    """The two DenseNets A7–A9 read: DenseNet-121 (DenseNet-BC) and the original DenseNet without bottleneck
    or compression (Huang et al. 2017, L=40, k=12 for CIFAR), each with a short tag for plots."""
    def plain(layers_per_block: int) -> DenseNet:
        return DenseNet(block_config=(layers_per_block,) * 3, growth_rate=12, num_init_features=16, bn_size=None,
                        compression=1.0, stem="cifar", in_channels=3)

    return ctx.pick(
        {"densenet121": (fusionjax.create_model("densenet121"), "DN-121"),
         "DenseNet (L=40, k=12)": (plain(12), "DN-40")},
        {"densenet_bc_16_12": (nets.densenet_bc(16, 12, in_channels=3), "DN-BC-16"),
         "DenseNet (L=13, k=12)": (plain(3), "DN-13")})


# Structure does not depend on the image size; 32×32 leaves DenseNet-121's last block a 1×1 map.
TRACE_SIZE = 32


def _readings(ctx: Context) -> dict[str, DenseNetReading]:
    return ctx.cached("densenet readings", lambda: {
        name: read_densenet(name, model, TRACE_SIZE) for name, (model, _) in _models(ctx).items()})


def _setup(ctx: Context) -> str:
    return (f"fusionjax's {' and '.join(_models(ctx))}, each traced once (jax.make_jaxpr of its initialization "
            f"forward on a {TRACE_SIZE}×{TRACE_SIZE} image in evaluation mode: nothing compiled or run) and read "
            f"off the traced program; Huang et al. 2017 (DenseNet, §3 and Table 1) for the architecture")


def decide_dense_block(*, three_by_three_per_block, other_convs_per_block) -> str:
    """Verdict on "a dense block is two 3×3 convolutions", per block of every model read: confirmed when every
    block holds exactly two convolutions, both 3×3; partly when some blocks do; refuted when none does."""
    is_two = (np.asarray(three_by_three_per_block) == 2) & (np.asarray(other_convs_per_block) == 0)
    return CONFIRMED if is_two.all() else (PARTLY if is_two.any() else REFUTED)


def _conv_counts(reading: DenseNetReading) -> dict[int, dict[str, int]]:
    counts = {}
    for layer in reading.layers:
        block = counts.setdefault(layer.block, {"layers": 0, "3×3": 0, "other": 0})
        block["layers"] += 1
        for operation in layer.operations:
            if "conv" in operation:
                block["3×3" if operation.startswith("3×3") else "other"] += 1
    return counts


@claim("A7", "a dense block is two 3×3 convolutions (a source)", decide=decide_dense_block)
def dense_block(ctx: Context) -> Outcome:
    readings = _readings(ctx)
    counts = {name: _conv_counts(reading) for name, reading in readings.items()}
    flat = [(name, block, c) for name, blocks in counts.items() for block, c in blocks.items()]
    verdict = decide_dense_block(three_by_three_per_block=[c["3×3"] for *_, c in flat],
                                 other_convs_per_block=[c["other"] for *_, c in flat])
    fig, (ax,) = plots.subplots(1, width=7.5)
    x = np.arange(len(flat))
    ax.bar(x - 0.2, [c["3×3"] for *_, c in flat], 0.4, label="3×3 convs")
    ax.bar(x + 0.2, [c["other"] for *_, c in flat], 0.4, label="1×1 convs")
    ax.axhline(2, color="k", ls="--", label="the claim: two 3×3 convs")
    tags = {name: tag for name, (*_, tag) in _models(ctx).items()}
    ax.set_xticks(x, [f"{tags[name]}\nblock {block}" for name, block, _ in flat], fontsize=8)
    ax.set(ylabel="convolutions in the dense block", title="what a dense block holds: one or two convs per layer")
    plots.legend_outside(ax)
    plot = ctx.save_plot(fig, "A7_dense_block.png")
    convs = {name: sorted({op for layer in reading.layers for op in layer.operations if "conv" in op})
             for name, reading in readings.items()}
    summary = "; ".join(f"{name}: blocks of {', '.join(str(c['layers']) for c in blocks.values())} layers, "
                        f"{' + '.join(convs[name])} each" for name, blocks in counts.items())
    two = sum(c["3×3"] == 2 and not c["other"] for *_, c in flat)
    return Outcome(
        verdict=verdict,
        measured=summary + f"; blocks of exactly two 3×3 convs: {two} of {len(flat)}",
        rule=f"over the {len(flat)} dense blocks of the two models: confirmed when every block holds exactly two "
             f"convolutions, both 3×3; partly when some do; refuted when none does",
        setup=_setup(ctx) + ": a dense block is L layers, each reading the concatenation of all earlier maps of its "
                            "block (L = 6, 12, 24, 16 in DenseNet-121)",
        plots=(plot,),
        details=markdown_table(["model", "block", "layers", "3×3 convs", "1×1 convs"],
                               [[name, block, c["layers"], c["3×3"], c["other"]] for name, block, c in flat]),
    )


def decide_block_connectivity(*, direct_cross_block_inputs: int, block_pairs_joined: int, block_pairs: int,
                              pairs_dependent: int, pairs_dependent_past_transition: int) -> str:
    """Verdict on "every dense block connects to every other block", over the pairs of blocks a < b of every model
    read: not measurable here when some block b is not computed from an earlier block a at all (the reading
    would not see a connection); refuted when no dense layer reads a map of another block (only its transition's
    output) and no block is computed from an earlier one once the transition into it is held fixed; confirmed
    when every pair is joined directly, a layer of b reading a map of a and b computed from a past the held
    transition; partly otherwise (some pairs joined)."""
    if pairs_dependent < block_pairs:
        return NOT_MEASURABLE
    if direct_cross_block_inputs == 0 and pairs_dependent_past_transition == 0:
        return REFUTED
    if block_pairs_joined == block_pairs and pairs_dependent_past_transition == block_pairs:
        return CONFIRMED
    return PARTLY


def _cross_block_reads(reading: DenseNetReading) -> np.ndarray:
    """reads[b, a]: maps that the dense layers of block b+1 read straight from block a+1's layers or output;
    column −1 counts those from the stem or a transition (the one path between blocks)."""
    blocks = max(layer.block for layer in reading.layers)
    reads = np.zeros((blocks, blocks + 1), int)
    for layer in reading.layers:
        for producer in layer.producers:
            source = _block_of(producer)
            reads[layer.block - 1, -1 if source is None else source - 1] += 1
    return reads


@claim("A8", "every dense block connects to every other block (a source)", decide=decide_block_connectivity)
def block_connectivity(ctx: Context) -> Outcome:
    readings = _readings(ctx)
    models = _models(ctx)
    reads = {name: _cross_block_reads(reading) for name, reading in readings.items()}
    direct = sum(int(r[:, :-1].sum() - np.trace(r[:, :-1])) for r in reads.values())
    pairs = [(name, a, b) for name, reading in readings.items() for a, b, *_ in reading.dependence]
    joined = sum(reads[name][b - 1, a - 1] > 0 for name, a, b in pairs)
    dependence = [row for reading in readings.values() for row in reading.dependence]
    dependent = sum(free for *_, free, _ in dependence)
    past_transition = sum(held for *_, held in dependence)
    verdict = decide_block_connectivity(direct_cross_block_inputs=direct, block_pairs_joined=joined,
                                        block_pairs=len(pairs), pairs_dependent=dependent,
                                        pairs_dependent_past_transition=past_transition)
    first = next(iter(reads))
    fig, (left, right) = plots.subplots(2, width=5.5, height=4.0)
    matrix = reads[first]
    shade = np.log10(1 + matrix)
    left.imshow(shade, cmap="Blues")
    for (row, column), value in np.ndenumerate(matrix):  # white on the darkest cells, to stay readable
        left.text(column, row, str(value), ha="center", va="center", fontsize=8,
                  color="white" if shade[row, column] > 0.6 * shade.max() else "black")
    left.set_xticks(range(matrix.shape[1]), [f"block {i + 1}" for i in range(matrix.shape[1] - 1)]
                    + ["stem or\ntransition"], fontsize=7)
    left.set_yticks(range(matrix.shape[0]), [f"block {i + 1}" for i in range(matrix.shape[0])], fontsize=8)
    left.set(xlabel="produced in", ylabel="read by the layers of", title=f"{first}: maps read, by origin")
    table = np.array([[free for *_, free, _ in dependence], [held for *_, held in dependence]], int)
    right.imshow(table, cmap="RdYlGn", vmin=-0.5, vmax=1.5, aspect="auto")
    for (row, column), value in np.ndenumerate(table):
        right.text(column, row, "yes" if value else "no", ha="center", va="center", fontsize=8)
    right.set_xticks(range(len(pairs)), [f"{models[name][1]}\n{a}→{b}" for name, a, b in pairs], fontsize=7)
    right.set_yticks([0, 1], ["through the\ntransitions", "transition\ninto b held"], fontsize=8)
    right.set(xlabel="blocks a → b", title="is block b computed from block a?")
    plot = ctx.save_plot(fig, "A8_block_connectivity.png")
    first_layers = sorted({layer.producers[0] for reading in readings.values() for layer in reading.layers
                           if layer.index == 1})
    rows = [[name, f"{a} → {b}", "yes" if f else "no", "yes" if h else "no"]
            for name, reading in readings.items() for a, b, f, h in reading.dependence]
    return Outcome(
        verdict=verdict,
        measured=f"maps a dense layer reads from another block's layers or output: {direct} (the first layers of the "
                 f"blocks read {', '.join(first_layers)}); block pairs joined directly: {joined} of {len(pairs)}; "
                 f"block b computed from block a: {dependent} of {len(pairs)} pairs through the transitions, "
                 f"{past_transition} of {len(pairs)} with the transition into b held fixed",
        rule=f"over the {len(pairs)} pairs of blocks a < b: not measurable here when some b is not computed from a "
             f"at all; refuted when no layer reads another block's maps and no b is computed from a with the "
             f"transition into b held fixed; confirmed when all {len(pairs)} pairs are joined directly in both "
             f"readings; partly otherwise",
        setup=_setup(ctx) + "; a layer's inputs are the module outputs it receives; dependence is the traced "
                            "program's data flow from block a's output to block b's output, with and without the "
                            "transition into b cut (its output a constant); Huang et al. 2017: dense connections "
                            "are within a block, blocks are joined only by transitions (BN-ReLU-1×1 conv-2×2 "
                            "average pool)",
        plots=(plot,),
        details=markdown_table(["model", "blocks a → b", "b computed from a", "with the transition into b held"],
                               rows),
    )


PLAIN_LAYER = ("BN", "ReLU")  # followed by one 3×3 conv: the original DenseNet's composite function H


def _is_plain(layer: DenseLayerReading) -> bool:
    return len(layer.operations) == 3 and layer.operations[:2] == PLAIN_LAYER and layer.operations[2].startswith("3×3")


def decide_dense_layer(*, plain_model_matching: float, bc_model_matching: float) -> str:
    """Verdict on "each DenseNet layer is BN-ReLU-3×3 conv", from the share of layers that are exactly that in the
    original DenseNet and in DenseNet-BC (DenseNet-121): confirmed when every layer of both is; partly when every
    layer of one of them is; refuted when neither model's layers all are."""
    matching = [plain_model_matching == 1.0, bc_model_matching == 1.0]
    return CONFIRMED if all(matching) else (PARTLY if any(matching) else REFUTED)


@claim("A9", "each DenseNet layer is BN-ReLU-3×3 conv (a source)", decide=decide_dense_layer)
def dense_layer(ctx: Context) -> Outcome:
    readings = _readings(ctx)
    bc_name, plain_name = list(readings)
    share = {name: float(np.mean([_is_plain(layer) for layer in reading.layers])) for name, reading in readings.items()}
    verdict = decide_dense_layer(plain_model_matching=share[plain_name], bc_model_matching=share[bc_name])
    sequences = {name: sorted({" - ".join(layer.operations) for layer in reading.layers})
                 for name, reading in readings.items()}
    fig, (ax,) = plots.subplots(1, width=9, height=3.0)
    ax.set_axis_off()
    ax.set(xlim=(0, 9), ylim=(-0.4, 2.4),
           title="one dense layer, as its traced forward computes it (→ output channels)")
    for row, name in enumerate([bc_name, plain_name]):
        first = readings[name].layers[0]
        y = 1.6 - 1.3 * row
        ax.text(0.0, y + 0.45, f"{name}: {share[name]:.0%} of {len(readings[name].layers)} layers are "
                               "BN-ReLU-3×3 conv", fontsize=9)
        ax.text(0.0, y, f"reads {first.input_width} ch", fontsize=8, va="center")
        x = 1.3
        for operation in first.operations:  # each box as wide as its label, then an arrow to the next
            colour = "C1" if operation.startswith("3×3") else ("C0" if "conv" in operation else "0.85")
            ax.text(x, y, operation, ha="left", va="center", fontsize=8,
                    bbox=dict(boxstyle="round", facecolor=colour, alpha=0.5))
            x += 0.075 * len(operation) + 0.25
            if operation is not first.operations[-1]:
                ax.text(x, y, "→", ha="left", va="center", fontsize=9)
                x += 0.3
    plot = ctx.save_plot(fig, "A9_dense_layer.png")
    return Outcome(
        verdict=verdict,
        measured="; ".join(f"{name}: every layer is {' or '.join(seq)} ({share[name]:.0%} BN-ReLU-3×3 conv)"
                           for name, seq in sequences.items()),
        rule=f"over the {len(readings[plain_name].layers)} layers of {plain_name} and the "
             f"{len(readings[bc_name].layers)} of {bc_name}: confirmed when every layer of both models is "
             f"BN-ReLU-3×3 conv; partly when every layer of one is; refuted when neither model's are",
        setup=_setup(ctx) + "; Huang et al. 2017: the DenseNet layer is BN-ReLU-3×3 conv, the DenseNet-B(C) layer "
                            "BN-ReLU-1×1 conv (4k) - BN-ReLU-3×3 conv (k); a ReLU is read where the program computes "
                            "a conv's input as max(·, 0) of the preceding BN's output and nothing else",
        plots=(plot,),
        details=markdown_table(["model", "layers", "operations of each layer", "BN-ReLU-3×3 conv"],
                               [[name, len(readings[name].layers), " or ".join(seq), f"{share[name]:.0%}"]
                                for name, seq in sequences.items()]),
    )


CLAIMS = [fpn_merge, dense_block, block_connectivity, dense_layer]
