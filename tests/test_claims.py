"""fusionjax-claims end to end (--quick), its report and --only, and the parts its verdicts rest on."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fusionjax.blocks import BasicBlock, DenseBlock, PreActBasicBlock, Transition
from fusionjax.claims import CLAIMS, architecture, base, counting, data, depth, nets, plots
from fusionjax.claims.cli import main
from fusionjax.claims.optimization import neighbour_correlation
from fusionjax.claims.training import Budget, Trainer
from fusionjax.models import DenseNet, create_model
from fusionjax.torch_compat import import_torchvision

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _summary_rows(report: str) -> dict[str, list[str]]:
    rows = {}
    for line in report.split("## Summary", 1)[1].splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| [") and len(cells) == 5:
            rows[cells[0].split("]")[0].lstrip("[")] = cells
    return rows


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("claims")
    assert main(["--quick", "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_quick_run_reports_every_claim_with_a_verdict_and_a_valid_png(quick_report):
    rows = _summary_rows((quick_report / "CLAIMS.md").read_text())
    assert list(rows) == list(CLAIMS)
    for claim_id, (_, statement, verdict, measured, plot) in rows.items():
        assert statement == CLAIMS[claim_id].statement
        assert verdict.replace("**", "").removesuffix(" (quick)") in base.VERDICTS, (claim_id, verdict)
        assert measured, claim_id
        files = [link.split("](")[1].rstrip(")") for link in plot.split(", ")]
        assert files, claim_id
        for name in files:
            assert (quick_report / name).read_bytes()[:8] == PNG_SIGNATURE, (claim_id, name)
    assert not list(quick_report.glob(".staging-*"))  # nothing half-written left behind


@pytest.mark.slow
def test_only_reruns_some_claims_and_keeps_the_other_rows(quick_report):
    before = json.loads((quick_report / "claims.json").read_text())
    assert main(["--quick", "--out", str(quick_report), "--only", "a2,P3"]) == 0
    after = json.loads((quick_report / "claims.json").read_text())
    assert list(after["claims"]) == list(before["claims"]) and len(after["runs"]) == 2
    assert {i for i, c in after["claims"].items() if c["run"] == 1} == {"A2", "P3"}
    assert all(after["claims"][i] == before["claims"][i] for i in CLAIMS if i not in ("A2", "P3"))
    assert list(_summary_rows((quick_report / "CLAIMS.md").read_text())) == list(CLAIMS)


def test_unknown_claim_ids_are_refused_with_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path), "--only", "A1,X9"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert "unknown claim ID(s) X9" in error and "valid IDs: A1, A2, A3, A4, A5, A6, A7, A8, A9, P1" in error
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_published_figures_are_torchvision_s():
    models = import_torchvision().models
    for name, (params, gflops, top1) in counting.TORCHVISION.items():
        family = next(f for f in ("ResNeXt", "ResNet", "DenseNet") if name.startswith(f.lower()))
        enum = family + name[len(family):].upper() + "_Weights"  # resnext50_32x4d: ResNeXt50_32X4D_Weights
        meta = getattr(models, enum).IMAGENET1K_V1.meta
        assert (params, gflops, top1) == (meta["num_params"], meta["_ops"], meta["_metrics"]["ImageNet-1K"]["acc@1"])


@pytest.mark.parametrize("depth, bottleneck, compression, expected", [
    # L=7: one 3×3 layer per block, stem 16 maps, θ = 1. Stem 27·16; each block BN 2c + 9·c·k with c = 16, 18,
    # 20 (k = 2); transitions BN 2c + c·c; norm5 2·22; classifier 22·10 + 10.
    (7, False, 1.0, 27 * 16 + (32 + 288) + (36 + 324) + (36 + 324) + (40 + 400) + (40 + 360) + 44 + 230),
    # L=10, DenseNet-BC: one bottleneck layer per block, stem 2k = 4 maps; a layer on c maps is BN 2c + c·4k +
    # BN 2·4k + 9·4k·k = 2c + 8c + 160; blocks on c = 4, 3, 2, transitions 6 → 3 and 5 → 2 (⌊θ·c⌋).
    (10, True, 0.5, 27 * 4 + (10 * 4 + 160) + (12 + 18) + (10 * 3 + 160) + (10 + 10) + (10 * 2 + 160) + 8 + 50),
])
def test_cifar_densenet_parameters_by_hand(depth, bottleneck, compression, expected):
    model = counting.cifar_densenet(depth, 2, bottleneck, compression)
    variables = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    assert sum(x.size for x in jax.tree.leaves(variables["params"])) == expected


def test_subsets_are_class_balanced_and_drawn_by_the_seed():
    digits = data.digits()
    assert (len(digits.train_labels), len(digits.test_labels)) == (1437, 360)
    subset = digits.subset(25, seed=0)
    assert sorted(np.bincount(subset.train_labels)) == [2] * 5 + [3] * 5
    np.testing.assert_array_equal(subset.train_images, digits.subset(25, seed=0).train_images)
    assert not np.array_equal(subset.train_images, digits.subset(25, seed=1).train_images)
    np.testing.assert_array_equal(subset.test_images, digits.test_images)
    with pytest.raises(ValueError, match="a subset needs 10–1437 images"):
        digits.subset(5, seed=0)


@pytest.mark.parametrize("block, expected", [(PreActBasicBlock, lambda x: x), (BasicBlock, jax.nn.relu)])
def test_zero_init_last_without_norm_starts_as_the_shortcut(block, expected):
    """With ``NoNorm`` the zero-initialized scale still silences the branch: the block is its shortcut at init."""
    x = jax.random.normal(jax.random.key(0), (2, 6, 6, 8))
    module = block(features=8, zero_init_last=True, norm=nets.NoNorm)
    np.testing.assert_array_equal(module.apply(module.init(jax.random.key(1), x), x), expected(x))


def test_zoo_names_are_used_where_the_zoo_has_them():
    assert nets.cifar_model("plain", 56).block.__name__ == "PlainBlock"
    assert nets.cifar_model("residual", 20).stage_sizes == (3, 3, 3)
    assert nets.cifar_model("residual", 8).stage_sizes == (1, 1, 1)  # not registered: built the same way
    with pytest.raises(ValueError, match="6n\\+2 layers"):
        nets.cifar_net(21)


def test_curvature_statistics_of_closed_forms():
    grid = np.linspace(-1, 1, 11)
    x, y = np.meshgrid(grid, grid, indexing="ij")
    step = grid[1] - grid[0]
    assert depth._curvature_statistics(x**2 + 2 * y**2, step) == (0.0, 1)  # a bowl: convex, one minimum
    assert depth._curvature_statistics(x**2 - y**2, step)[0] == 1.0  # a saddle: negative curvature everywhere
    assert depth._curvature_statistics(np.cos(4 * x) * np.cos(4 * y), step)[1] > 1  # an egg crate: many minima


def test_neighbour_correlation_of_closed_forms():
    rng = np.random.default_rng(0)
    points, pixels = 256, 196
    # White noise: independent gradients. Centering biases the estimate by −1/points; its spread is
    # 1/√(points·pixels) ≈ 0.0045, so 0.03 is over 5 spreads beyond the bias.
    assert abs(neighbour_correlation(rng.standard_normal((points, pixels)))) < 0.03
    # A sinusoid of k whole periods along the line: exactly cos(2πk/points) (the dropped last pair's term is
    # sin(2πk)·… = 0), up to float64 rounding.
    direction = rng.standard_normal(pixels)
    for k in (1, 4, 32):
        wave = np.sin(2 * np.pi * k * np.arange(points) / points)[:, None] * direction
        np.testing.assert_allclose(neighbour_correlation(wave), np.cos(2 * np.pi * k / points), rtol=1e-9)
    # A random walk (brown noise, Balduzzi et al.'s picture of a resnet's gradient) stays close to 1.
    assert neighbour_correlation(np.cumsum(rng.standard_normal((points, pixels)), axis=0)) > 0.9


def test_verdict_helpers():
    assert base.spread([1.0, 2.0, 3.0]) == "2 [1–3]" and base.spread([0.5]) == "0.5"
    assert base.separated([1, 2], [3, 4]) and not base.separated([1, 3], [2, 4])
    with pytest.raises(ValueError, match="verdict must be one of"):
        base.Outcome("probably", "", "", "", ("a.png",))


def test_symlog_axis_starts_at_zero_and_keeps_zeros_and_the_largest_value():
    fig, (ax,) = plots.subplots(1)
    ax.plot([1, 2, 3], [0.0, 1e-4, 2.5])
    ax.set_ylabel("training loss")
    plots.log_axis_with_zero(ax, 1e-3)
    low, high = ax.get_ylim()
    assert low == 0 and high >= 2.5 and ax.get_yscale() == "symlog"
    assert ax.get_ylabel() == "training loss (linear below 0.001)"


def test_budget_warm_up_is_a_share_of_the_steps_and_at_least_one():
    assert Budget(steps=400, batch_size=8).warmup_steps == 20  # 5 %
    assert Budget(steps=10, batch_size=8).warmup_steps == 1
    assert Budget(steps=200, batch_size=8, warmup=0.25).warmup_steps == 50
    assert "50-step linear warm-up" in Budget(steps=200, batch_size=8, warmup=0.25).describe()


class _Small(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Dense(10)(nn.relu(nn.Conv(4, (3, 3))(x)).mean(axis=(1, 2)))


def test_training_is_determined_by_the_seed():
    digits = data.digits()
    trainer = Trainer(_Small(), Budget(steps=6, batch_size=32, evals=2), digits.image_shape)
    first, again, other = (trainer.train(digits, seed) for seed in (0, 0, 1))
    assert first.train_loss == again.train_loss and first.test_error == again.test_error
    assert first.train_loss != other.train_loss
    assert first.steps == (3, 6)
    flat = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.array_equal(a, b), first.variables, again.variables))
    assert all(flat)


def test_torchvision_fpn_is_the_add_fpn_and_not_the_concat_one():
    """A6 can tell the merges apart: with torchvision's weights, only add (or concat forced into add's [I; I]
    merge) gives torchvision's outputs; concat's learned merge does not, and costs a 2F·F + F merge per level."""
    features, in_channels = 16, (8, 16, 32)
    results = architecture.fpn_against_torchvision(in_channels, features, 16)
    assert results["add"]["difference"] <= architecture.SAME_OUTPUT
    assert results["concat, merge fixed to [I; I]"]["difference"] <= architecture.SAME_OUTPUT
    assert results["concat"]["difference"] > 0.1  # a random 1×1 merge moves outputs by O(1), not by rounding
    # closed form: a 1×1 lateral and a 3×3 output conv with biases per level, plus concat's merges
    add_params = sum(c * features + features + 9 * features * features + features for c in in_channels)
    assert results["torchvision"]["params"] == results["add"]["params"] == add_params
    merges = (len(in_channels) - 1) * (2 * features * features + features)
    assert results["concat"]["params"] == add_params + merges


def _expected_dense_layers(block_config, growth, first_width, compression):
    """Huang et al. 2017: layer j of block b reads the block input and the j−1 earlier layers' maps of that block,
    C_b + (j−1)·k channels; a transition turns C_b + L_b·k channels into ⌊θ·(C_b + L_b·k)⌋."""
    width, layers, transitions = first_width, [], []
    for b, size in enumerate(block_config, start=1):
        first = "stem" if b == 1 else f"transition{b - 1}"
        for j in range(1, size + 1):
            producers = (first, *(f"denseblock{b}/denselayer{i}" for i in range(1, j)))
            layers.append((b, j, producers, width + (j - 1) * growth))
        if b < len(block_config):
            transitions.append((width + size * growth, int((width + size * growth) * compression)))
            width = transitions[-1][1]
    return layers, transitions


def _plain_densenet(**options) -> DenseNet:
    return DenseNet(block_config=(3, 4, 2), growth_rate=12, num_init_features=16, bn_size=None, compression=1.0,
                    stem="cifar", in_channels=3, **options)


@pytest.mark.parametrize("name, model, operations", [
    ("densenet121", create_model("densenet121"), ("BN", "ReLU", "1×1 conv→128", "BN", "ReLU", "3×3 conv→32")),
    ("plain", _plain_densenet(), ("BN", "ReLU", "3×3 conv→12")),
    # the same model without an activation: the reading must not see a ReLU that is not there
    ("plain, no activation", _plain_densenet(act=lambda x: x), ("BN", "3×3 conv→12")),
])
def test_dense_structure_readings_follow_the_paper(name, model, operations):
    reading = architecture.read_densenet(name, model, 32)
    layers, transitions = _expected_dense_layers(model.block_config, model.growth_rate, model.num_init_features,
                                                 model.compression)
    assert [(l.block, l.index, l.producers, l.input_width) for l in reading.layers] == layers
    assert {l.operations for l in reading.layers} == {operations}
    assert list(reading.transitions) == transitions
    blocks = len(model.block_config)  # every later block is computed from every earlier one, only via transitions
    assert list(reading.dependence) == [(a, b, True, False) for a in range(1, blocks) for b in range(a + 1, blocks + 1)]


class _TwoBlocks(nn.Module):
    """Two dense blocks joined by a transition; with ``skip``, block 2 also reads block 1's pooled output directly."""

    skip: bool
    in_channels: int = 3

    @nn.compact
    def __call__(self, x, train: bool = False):
        first = DenseBlock(2, 4, bn_size=None, name="denseblock1")(nn.Conv(8, (3, 3))(x), train)
        second = Transition(1.0, name="transition1")(first, train)
        if self.skip:
            second = second + nn.avg_pool(first, (2, 2), (2, 2))
        return DenseBlock(2, 4, bn_size=None, name="denseblock2")(second, train)


@pytest.mark.parametrize("skip", [False, True])
def test_block_dependence_sees_a_path_past_the_transition_exactly_when_there_is_one(skip):
    closed, _ = architecture.trace_densenet(_TwoBlocks(skip), 8)
    assert architecture.block_dependence(closed) == [(1, 2, True, skip)]


def test_scanned_cifar_resnet_equals_the_unrolled_one():
    """The same weights, restacked along the scanned blocks' leading axis, give the unrolled ResNet-20's logits,
    updated BatchNorm statistics and gradients, to float32 rounding (rtol 1e-5: the same operations, which XLA may
    fuse in another order)."""
    x = jax.random.normal(jax.random.key(0), (8, 8, 8, 1))
    labels = jnp.arange(8) % 10
    unrolled, scanned = nets.cifar_net(20), nets.cifar_net(20, scan=True)
    variables = unrolled.init(jax.random.key(1), x)

    def restack(tree):  # layer{s}_1, layer{s}_2 → layer{s}_rest/block with a leading axis of 2
        out = {k: v for k, v in tree.items() if not k.startswith("layer") or k.endswith("_0")}
        for stage in (1, 2, 3):
            out[f"layer{stage}_rest"] = {"block": jax.tree.map(lambda *a: jnp.stack(a), tree[f"layer{stage}_1"],
                                                               tree[f"layer{stage}_2"])}
        return out

    stacked = {collection: restack(tree) for collection, tree in variables.items()}
    assert jax.tree.structure(stacked) == jax.tree.structure(scanned.init(jax.random.key(1), x))

    def loss_and_stats(model, variables):
        def loss(params):
            logits, updates = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"])
            return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), (logits, updates)
        return jax.value_and_grad(loss, has_aux=True)(variables["params"])

    (loss_u, (logits_u, stats_u)), grads_u = loss_and_stats(unrolled, variables)
    (loss_s, (logits_s, stats_s)), grads_s = loss_and_stats(scanned, stacked)
    # Same ops, summed in another order by the scan: float32 rounding, ≤ 1e-5 of each array's largest magnitude
    # (jax 0.12 fuses differently from 0.10 and moved one value of 0.052 by 2e-6).
    close = lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5 * float(np.max(np.abs(b))))
    close(logits_s, logits_u)
    close(loss_s, loss_u)
    jax.tree.map(close, grads_s, restack(grads_u))
    jax.tree.map(close, stats_s["batch_stats"], restack(stats_u["batch_stats"]))
    close(scanned.apply(stacked, x, train=False), unrolled.apply(variables, x, train=False))
