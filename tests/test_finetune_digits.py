"""benchmarks.finetune_digits: its image folders against PIL and scikit-learn's own arrays, and a smaller run of it
(docs/training.md, "Shown on real images") in which fine-tuning from MNIST beats the same recipe from scratch."""

import numpy as np
import pytest
from PIL import Image

from benchmarks import finetune_digits


def test_mnist_digits_are_cropped_to_their_ink_padded_square_and_area_averaged():
    image = np.zeros((28, 28), np.uint8)
    image[5:21, 3:11] = 255  # ink 16 rows by 8 columns: padded to 16x16 with 4 empty columns each side
    expected = np.zeros((8, 8), np.uint8)
    expected[:, 2:6] = 255  # each 2x2 cell of the 16x16 square is wholly ink or wholly empty
    np.testing.assert_array_equal(finetune_digits.mnist_as_digits(image), expected)
    image[5, 3] = 55  # one cell: (55 + 3 × 255) / 4 = 205
    assert finetune_digits.mnist_as_digits(image)[0, 2] == 205


def test_few_digits_folder_holds_a_fixed_choice_per_class_for_training_and_every_other_digit_for_evaluation(
        tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    root = finetune_digits.write_few_digits(tmp_path / "few", per_class=3)
    again = finetune_digits.write_few_digits(tmp_path / "again", per_class=3)
    train = sorted(p.relative_to(root).as_posix() for p in (root / "train").rglob("*.png"))
    assert train == sorted(p.relative_to(again).as_posix() for p in (again / "train").rglob("*.png"))
    val = list((root / "val").rglob("*.png"))
    assert len(train) == 30 and len(val) == 1797 - 30
    for label in range(10):
        assert len(list((root / "train" / str(label)).glob("*.png"))) == 3
    for path in [root / p for p in train] + val[:50]:
        index, label = int(path.stem), int(path.parent.name)
        assert digits.target[index] == label
        with Image.open(path) as image:
            assert image.mode == "L"
            np.testing.assert_array_equal(np.asarray(image), np.rint(digits.images[index] * 255 / 16))


@pytest.mark.slow
def test_fine_tuning_from_mnist_beats_the_same_recipe_from_scratch_on_ten_digits_per_class(tmp_path, monkeypatch):
    """A smaller run of the benchmark, about 40 s on 2 cores: 1,000 MNIST digits for 3 epochs, then one seed. The
    two few-label runs share their command line but for where the model comes from (--config.init_from, or the
    same architecture by name), so weights that failed to load would tie them, not win."""
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")  # the user's one CPU device
    top1, commands, _ = finetune_digits.compare(tmp_path, tmp_path / "runs", per_class=10, seeds=[0],
                                                mnist_count=1000, pretrain_epochs=3, epochs=20, batch_size=20,
                                                kinds=("finetuned", "scratch"))
    finetuned, scratch = top1["finetuned"][0], top1["scratch"][0]
    differing = set(commands["finetuned_seed0"]) ^ set(commands["scratch_seed0"])
    assert {a.split("=")[0] for a in differing} == {"--workdir", "--config.init_from", "--config.model",
                                                   "--config.model_overrides.in_channels"}
    # 1,697 evaluation digits: a point of top-1 is 17 of them. Across seeds the benchmark's top-1 moves by under a
    # point (docs/training.md); a trial of these settings gave 0.923 against 0.822.
    assert finetuned >= scratch + 0.05, top1
    assert scratch > 0.5, top1  # scratch learns something: the gap is fine-tuning's, not a broken baseline
