"""``fusionjax-predict`` against independent references: the trainer's own evaluation batches (digits, used as they
are), torchvision's Resize on the PIL image and the card's normalization in NumPy, ``model.apply`` on the variables
the trainer saved and a float64 NumPy softmax; torchvision's own eval transforms and a torch model's logits for
converted ImageNet weights. The ONNX and StableHLO exports of the same workdir give the same top-k. The workdir is
test_sources.py's (4 steps of tiny digits).
"""

import json

import numpy as np
import pytest
from PIL import Image

import fusionjax
from fusionjax import cards, predict
from test_sources import DIGITS_NORMALIZATION, IMAGENET_NORMALIZATION, trained  # noqa: F401 (the fixture)
from test_train import TINY_MODEL

# Probabilities of the same logits, computed by XLA and by onnxruntime (float32 reorderings).
ARTIFACT_ATOL = 1e-5


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Images of every kind the command converts: RGB (JPEG), grayscale, RGBA, palette with transparency, 16-bit."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (21, 30, 3), np.uint8)
    Image.fromarray(rgb).save(folder / "photo.jpg")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb[:14, :9], rng.integers(0, 256, (14, 9, 1), np.uint8)])).save(folder / "rgba.png")
    palette = Image.fromarray(rgb[:9, :17]).quantize(16)
    palette.info["transparency"] = 0
    palette.save(folder / "palette.png")
    Image.fromarray(rng.integers(0, 1 << 16, (12, 12), np.uint16)).save(folder / "deep.png")
    (folder / "notes.txt").write_text("not an image, and not read: only image suffixes are")
    return folder


def reference_probabilities(files, variables) -> np.ndarray:
    """Softmax of the tiny model's logits on each file, preprocessed by torchvision and NumPy: digits are evaluated
    as they are (8x8), so an image of another size is resized to 8x8."""
    from fusionjax.torch_compat import import_torchvision

    evaluation = import_torchvision().transforms.Resize((8, 8))
    batch = []
    for file in files:
        with Image.open(file) as image:
            gray = image.convert("L")
        pixels = np.asarray(evaluation(gray), np.float64)[..., None]
        batch.append((pixels / DIGITS_NORMALIZATION["pixel_max"] - DIGITS_NORMALIZATION["mean"])
                     / DIGITS_NORMALIZATION["std"])
    model = fusionjax.create_model("resnet20", num_classes=10, **TINY_MODEL)
    logits = np.asarray(model.apply(variables, np.asarray(batch, np.float32), train=False), np.float64)
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def run_json(capsys, *argv) -> list[dict]:
    assert predict.main([str(a) for a in argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_a_workdir_and_its_onnx_export_predict_the_reference_top_k(trained, images, tmp_path, capsys):
    from fusionjax.export import export_directory

    path, written = trained
    files = sorted(p for p in images.iterdir() if p.suffix != ".txt")
    expected = reference_probabilities(files, written[6])

    results = run_json(capsys, path, images, "--top-k", 3, "--json")
    assert [r["image"] for r in results] == [str(f) for f in files]
    for result, probabilities in zip(results, expected):
        top = np.argsort(-probabilities, kind="stable")[:3]
        assert [entry["index"] for entry in result["top_k"]] == top.tolist()
        assert [entry["class"] for entry in result["top_k"]] == [str(i) for i in top]  # digits' names
        np.testing.assert_allclose([entry["probability"] for entry in result["top_k"]], probabilities[top],
                                   rtol=1e-5)

    onnx_file = export_directory(str(path), str(tmp_path / "digits.onnx"), artifact_format="onnx", batch=2)
    stablehlo_file = export_directory(str(path), str(tmp_path / "digits.stablehlo"), artifact_format="stablehlo",
                                      nchw=True)
    for artifact in (onnx_file, stablehlo_file):  # 5 images in batches of 2 (NHWC), or all at once (NCHW)
        from_artifact = run_json(capsys, artifact, images, "--top-k", 3, "--json")
        assert [[e["index"] for e in r["top_k"]] for r in from_artifact] == [[e["index"] for e in r["top_k"]]
                                                                            for r in results]
        np.testing.assert_allclose([[e["probability"] for e in r["top_k"]] for r in from_artifact],
                                   [[e["probability"] for e in r["top_k"]] for r in results], atol=ARTIFACT_ATOL)

    assert predict.main([f"{path}@4", str(files[0]), "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    probabilities = reference_probabilities(files[:1], written[4])[0]
    top = np.argsort(-probabilities, kind="stable")[:2]
    assert lines[0] == str(files[0]) and [line.split()[1] for line in lines[1:]] == [str(i) for i in top]
    np.testing.assert_allclose([float(line.split()[0]) for line in lines[1:]], probabilities[top], atol=0.5e-4 + 1e-6)


def test_held_out_digits_as_png_files_give_the_trainers_own_eval_probabilities(trained, tmp_path, capsys):
    """The card says digits were evaluated as they are (no crop): the test split written as PNG files (scikit-learn's
    0-16 values) predicts the softmax of ``model.apply`` on the trainer's own evaluation batch."""
    from fusionjax.train import data, workdir as workdir_lib

    path, written = trained
    assert cards.read_json(path / cards.WORKDIR_CARD)["eval_resize"] == {"method": cards.RESIZE}
    description = data.describe(workdir_lib.load_workdir_config(path), workdir=path)
    count = 48
    batch = next(iter(data.eval_batches(description, global_batch_size=count)))
    files = []
    for index, pixels in enumerate(description.eval.source.images[:count]):
        files.append(tmp_path / f"{index:03d}.png")
        Image.fromarray(pixels[..., 0]).save(files[-1])
    model = fusionjax.create_model("resnet20", num_classes=10, **TINY_MODEL)
    logits = np.asarray(model.apply(written[6], batch["image"], train=False), np.float64)
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)

    results = run_json(capsys, path, tmp_path, "--top-k", 10, "--json")
    assert [r["image"] for r in results] == [str(f) for f in files]
    predicted = np.zeros_like(expected)
    for row, result in zip(predicted, results):
        row[[e["index"] for e in result["top_k"]]] = [e["probability"] for e in result["top_k"]]
    np.testing.assert_allclose(predicted, expected, atol=1e-6)


@pytest.mark.parametrize("arch, weights", [("resnet18", "IMAGENET1K_V1"), ("resnet50", "IMAGENET1K_V2")])
def test_torchvision_weights_are_preprocessed_as_their_own_eval_transforms(arch, weights, tmp_path):
    """V1 weights resize to 256, V2 to 232, before the 224 crop: torchvision's ``weights.transforms()``."""
    from fusionjax.convert import hub

    entry = hub.torchvision_weights(arch, weights)
    rng = np.random.default_rng(2)
    for shape in ((300, 410, 3), (333, 250, 3)):  # landscape and portrait
        Image.fromarray(rng.integers(0, 256, shape, np.uint8)).save(tmp_path / "image.png")
        with Image.open(tmp_path / "image.png") as image:
            expected = entry.transforms()(image.convert("RGB")).permute(1, 2, 0).numpy()
        actual = predict.preprocess(tmp_path / "image.png", (224, 224, 3), IMAGENET_NORMALIZATION,
                                    hub.eval_resize(entry))
        np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_converted_imagenet_weights_predict_the_names_torch_gives(tmp_path, capsys):
    """fusionjax-convert's card names torchvision's ImageNet categories (timm's: its ImageNetInfo), so predict prints
    the names of the classes a torch model with the same weights ranks first."""
    import torch

    from fusionjax import convert
    from fusionjax.convert.timm_architecture import import_timm
    from fusionjax.torch_compat import import_torchvision

    torchvision = import_torchvision()
    torch.manual_seed(0)
    torch_model = torchvision.models.get_model("resnet18", weights=None).eval()
    torch.save(torch_model.state_dict(), tmp_path / "resnet18.pth")
    assert convert.main(["resnet18", str(tmp_path / "resnet18.pth"), "--out", str(tmp_path / "converted")]) == 0
    entry = torchvision.models.ResNet18_Weights.DEFAULT
    assert cards.read_json(tmp_path / "converted" / cards.CONVERTED_CARD)["classes"] == entry.meta["categories"]
    capsys.readouterr()  # what fusionjax-convert printed

    Image.fromarray(np.random.default_rng(3).integers(0, 256, (250, 200, 3), np.uint8)).save(tmp_path / "a.png")
    with Image.open(tmp_path / "a.png") as image, torch.no_grad():
        logits = torch_model(entry.transforms()(image.convert("RGB"))[None]).numpy()[0].astype(np.float64)
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    top = np.argsort(-probabilities, kind="stable")[:3]
    (result,) = run_json(capsys, tmp_path / "converted", tmp_path / "a.png", "--top-k", 3, "--json")
    assert [e["class"] for e in result["top_k"]] == [entry.meta["categories"][i] for i in top]
    np.testing.assert_allclose([e["probability"] for e in result["top_k"]], probabilities[top], rtol=1e-4)

    timm = import_timm()
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), tmp_path / "timm.pth")
    assert convert.main(["--from", "timm", "resnet18", str(tmp_path / "timm.pth"), "--out",
                         str(tmp_path / "from_timm")]) == 0
    info = timm.data.ImageNetInfo()
    assert cards.read_json(tmp_path / "from_timm" / cards.CONVERTED_CARD)["classes"] == [
        info.index_to_description(label) for label in range(1000)]


def test_bgr_weights_get_their_channels_reversed_after_the_crop(tmp_path):
    """Keras's caffe-mode weights: BGR, the mean pixel subtracted, no scaling."""
    caffe = {"channel_order": "BGR", "pixel_max": 1.0, "mean": [103.939, 116.779, 123.68], "std": [1.0, 1.0, 1.0]}
    pixels = np.random.default_rng(1).integers(0, 256, (16, 16, 3), np.uint8)
    Image.fromarray(pixels).save(tmp_path / "image.png")
    size = 14  # 14 / 0.875 = 16: the image is already at the resize size, so the centre crop is all that happens
    expected = pixels[1:15, 1:15, ::-1].astype(np.float64) - caffe["mean"]
    np.testing.assert_allclose(predict.preprocess(tmp_path / "image.png", (size, size, 3), caffe,
                                                  cards.resize_shorter_crop(0.875)), expected, atol=1e-4)


def test_mistakes_are_one_error_line(trained, images, tmp_path, capsys):
    path, _ = trained
    for argv, message in [
        ([path, tmp_path / "missing.png"], "missing.png does not exist"),
        ([tmp_path / "nowhere", images], "nowhere does not exist"),
        ([images, images], "is not a source of weights"),
        ([f"{path}@9", images], "no checkpoint at step 9"),
    ]:
        assert predict.main([str(a) for a in argv]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err

    unknown = tmp_path / "unknown"  # a workdir, and an artifact, made by a fusionjax with another zoo
    unknown.mkdir()
    (unknown / "config.json").write_text(json.dumps({**json.loads((path / "config.json").read_text()),
                                                     "model": "resnet9000"}))
    (tmp_path / "model.onnx").write_bytes(b"not read")
    cards.write_json(cards.export_card_path(tmp_path / "model.onnx"), {
        "format": "onnx", "architecture": "resnet9000", "classes": 10,
        "input": {"shape": [None, 8, 8, 1], "layout": "NHWC", "batch": "dynamic"}})
    for source in (unknown, tmp_path / "model.onnx"):
        assert predict.main([str(source), str(images)]) == 1
        err = capsys.readouterr().err
        assert err.startswith("fusionjax-predict: error: ") and err.count("\n") == 1, err
        assert "'resnet9000', an architecture this fusionjax's zoo does not have" in err

    (tmp_path / "broken.png").write_bytes((images / "gray.png").read_bytes()[:60])  # a download cut short
    assert predict.main([str(path), str(tmp_path / "broken.png")]) == 1
    err = capsys.readouterr().err
    assert "broken.png is not an image PIL can read" in err and err.count("\n") == 1, err


def test_parse_reads_the_documented_command_line():
    args = predict.parse(["run@best", "a.jpg", "photos/", "--top-k", "3", "--json"])
    assert (args.source, args.images, args.top_k, args.json) == ("run@best", ["a.jpg", "photos/"], 3, True)
    with pytest.raises(SystemExit):
        predict.parse(["run", "a.jpg", "--top-k", "0"])
