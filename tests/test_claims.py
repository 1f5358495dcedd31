"""fusionjax-claims end to end (--quick), its report and --only, and the parts its verdicts rest on."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fusionjax.blocks import BasicBlock, PreActBasicBlock
from fusionjax.claims import CLAIMS, base, counting, data, depth, nets
from fusionjax.claims.cli import main
from fusionjax.claims.training import Budget, Trainer
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
    assert "unknown claim ID(s) X9" in error and "valid IDs: A1, A2, A3, A4, A5, P1" in error
    assert not list(tmp_path.iterdir())  # refused before anything is written


def test_published_figures_are_torchvision_s():
    models = import_torchvision().models
    for name, (params, gflops, top1) in counting.TORCHVISION.items():
        family = name.rstrip("0123456789")
        enum = {"resnet": "ResNet", "densenet": "DenseNet"}[family] + name[len(family):] + "_Weights"
        meta = getattr(models, enum).IMAGENET1K_V1.meta
        assert (params, gflops, top1) == (meta["num_params"], meta["_ops"], meta["_metrics"]["ImageNet-1K"]["acc@1"])


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


def test_verdict_helpers():
    assert base.spread([1.0, 2.0, 3.0]) == "2 [1–3]" and base.spread([0.5]) == "0.5"
    assert base.separated([1, 2], [3, 4]) and not base.separated([1, 3], [2, 4])
    with pytest.raises(ValueError, match="verdict must be one of"):
        base.Outcome("probably", "", "", "", ("a.png",))


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
