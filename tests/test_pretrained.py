"""``fusionjax.pretrained`` where it cannot download: offline (name resolution fails, as on CI), with a file placed
in the cache by hand, and without torch. The reference is torchvision's weights enum (its URL), torch's own
``torch.load`` of the file placed, and the messages a user acts on.
"""

import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import fusionjax
from fusionjax.convert import PretrainedUnavailableError, to_torchvision
from fusionjax.torch_compat import import_torchvision

tv = import_torchvision()


def placed_at(error: pytest.ExceptionInfo) -> Path:
    """The cache path the offline message tells the user to place the downloaded file at."""
    return Path(re.search(r"place it at (\S+)", str(error.value)).group(1))


def random_resnet18(path: Path) -> Path:
    """A file as torchvision saves one, of random weights (a real download's hash prefix cannot match them)."""
    torch.manual_seed(0)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tv.models.resnet18().state_dict(), path)
    return path


def test_offline_names_the_url_and_the_cache_path_then_checks_the_placed_files_hash(no_network, tmp_path,
                                                                                 monkeypatch):
    monkeypatch.setenv("FUSIONJAX_CACHE", str(tmp_path / "cache"))
    url = tv.models.ResNet18_Weights.DEFAULT.url
    expected_path = tmp_path / "cache" / "torchvision" / os.path.basename(url)
    with pytest.raises(PretrainedUnavailableError) as error:
        fusionjax.pretrained("resnet18")
    message = str(error.value)
    assert "\n" not in message and url in message and "Name or service not known" in message
    assert placed_at(error) == expected_path
    assert not any(path.is_file() for path in (tmp_path / "cache").rglob("*"))  # no partial download left

    random_resnet18(expected_path)
    digest = hashlib.sha256(expected_path.read_bytes()).hexdigest()
    with pytest.raises(PretrainedUnavailableError) as error:
        fusionjax.pretrained("resnet18")
    message = str(error.value)
    assert "\n" not in message and str(expected_path) in message and digest[:12] in message
    assert "f37072fd" in os.path.basename(url) and "not the f37072fd… its name promises" in message
    assert f"Delete it, and download {url} to that path again" in message
    assert not (tmp_path / "cache" / "converted").exists()


def test_a_file_placed_where_the_message_says_is_converted_offline(no_network, tmp_path, monkeypatch):
    source = random_resnet18(tmp_path / "elsewhere" / "resnet18.pth")
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    entry = tv.models.ResNet18_Weights.DEFAULT
    # torchvision's URL with the hash of the file at hand, so that the placed file passes the check a real one does
    monkeypatch.setattr(entry.value, "url", f"https://download.pytorch.org/models/resnet18-{digest[:8]}.pth")
    monkeypatch.setenv("FUSIONJAX_CACHE", str(tmp_path / "cache"))
    with pytest.raises(PretrainedUnavailableError) as error:
        fusionjax.pretrained("resnet18")
    placed_at(error).parent.mkdir(parents=True, exist_ok=True)
    placed_at(error).write_bytes(source.read_bytes())

    model, variables = fusionjax.pretrained("resnet18")
    expected = torch.load(source, weights_only=True)
    back = to_torchvision("resnet18", variables)
    assert all(torch.equal(back[key], value) for key, value in expected.items())
    card = json.loads((tmp_path / "cache" / "converted" / f"resnet18.resnet18-{digest[:8]}" / "card.json").read_text())
    transform = entry.transforms()
    assert (card["normalization"]["mean"], card["normalization"]["std"]) == (transform.mean, transform.std)
    np.testing.assert_array_equal(variables["params"]["fc"]["bias"], expected["fc.bias"].numpy())


def test_without_torch_one_line_names_the_extra_to_install(tmp_path):
    code = textwrap.dedent("""
        import sys
        sys.modules.update(torch=None, torchvision=None, timm=None)  # as if not installed: importing them fails
        import fusionjax
        from fusionjax.convert import PretrainedUnavailableError
        try:
            fusionjax.pretrained("resnet18")
        except PretrainedUnavailableError as error:
            print(error)
    """)
    env = {**os.environ, "FUSIONJAX_CACHE": str(tmp_path / "cache")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.count("\n") == 1 and "pip install 'fusionjax[torch]'" in out and "torch and torchvision" in out
    assert not (tmp_path / "cache").exists()
