"""A StableHLO artifact for cpu, cuda and tpu reloads and runs in a fresh process that has only jax (with what jax
requires, and flatbuffers, which jax.export's deserializer imports but jax does not declare) on its path: no flax,
no fusionjax. Its logits are compared with the model's, computed here."""

import importlib.metadata
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest
from packaging.requirements import Requirement

import fusionjax
from fusionjax.export import artifact, to_stablehlo

LOADER = textwrap.dedent("""
    import importlib.util, sys
    sys.path.append(sys.argv[4])  # -I -S: the standard library only, then this directory of jax and its needs
    for absent in ("flax", "fusionjax", "optax", "orbax"):
        assert importlib.util.find_spec(absent) is None, absent + " is importable"
    import numpy as np
    from jax import export
    exported = export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
    images = np.load(sys.argv[2])
    np.save(sys.argv[3], np.asarray(exported.call(images)))
    print(",".join(exported.platforms))
""")


def jax_only_path(directory: Path) -> Path:
    """A directory of links to the installed jax, flatbuffers and the distributions they require, recursively."""
    pending, seen = ["jax", "flatbuffers"], set()
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        distribution = importlib.metadata.distribution(name)
        for requirement in map(Requirement, distribution.requires or []):
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
        tops = {Path(str(f)).parts[0] for f in distribution.files or []}
        for top in tops - {".."}:
            source = Path(distribution.locate_file(top))
            if source.exists() and not (directory / top).exists() and not top.endswith(".dist-info"):
                (directory / top).symlink_to(source)
    return directory


@pytest.mark.slow
def test_multi_platform_artifact_runs_with_only_jax(tmp_path):
    model = fusionjax.create_model("resnet18", stage_sizes=(1, 1, 1, 1), stage_widths=(8, 8, 16, 16), stem_width=8)
    shape = (32, 32, 3)
    variables = jax.jit(model.init)(jax.random.key(0), np.zeros((1, *shape), np.float32))
    exported = to_stablehlo(model, variables, shape, platforms=("cpu", "cuda", "tpu"))
    artifact.write_artifact(tmp_path / "model.stablehlo", exported.serialize(),
                            artifact.make_card(artifact_format="stablehlo", architecture="resnet18",
                                               spec=artifact.input_spec(shape, None), nchw=False))
    images = np.random.default_rng(0).standard_normal((3, *shape), np.float32)
    np.save(tmp_path / "images.npy", images)
    (tmp_path / "loader.py").write_text(LOADER)
    (tmp_path / "site").mkdir()
    site = jax_only_path(tmp_path / "site")
    env = {"PATH": os.environ.get("PATH", ""), "JAX_PLATFORMS": "cpu"}
    command = [sys.executable, "-I", "-S", str(tmp_path / "loader.py"), str(tmp_path / "model.stablehlo"),
               str(tmp_path / "images.npy"), str(tmp_path / "logits.npy"), str(site)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "cpu,cuda,tpu"
    logits = np.load(tmp_path / "logits.npy")
    expected = jax.jit(model.apply)(variables, images)
    assert artifact.relative_error(logits, expected) <= artifact.FLOAT32_TOLERANCE
    card = json.loads((tmp_path / "model.stablehlo.card.json").read_text())
    assert card["input"] == {"shape": [None, 32, 32, 3], "layout": "NHWC", "dtype": "float32", "batch": "dynamic"}
