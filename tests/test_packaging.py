"""How the suite is installed and run: ``--without-torch`` skips exactly the tests that import torch,
``.ci/run`` refuses to start without its second interpreter (docs/installation.md), every command line installs."""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_without_torch_skips_only_the_tests_that_import_torch(tmp_path):
    """In a copy of this conftest's setting: a module importing torch at its top is skipped whole, a test importing
    torchvision is skipped alone, and an installed library's optional ``import torch`` sees an ImportError."""
    project = tmp_path / "project"
    (project / "tests").mkdir(parents=True)
    shutil.copy(Path(__file__).with_name("conftest.py"), project / "tests" / "conftest.py")
    (project / "tests" / "test_module_needs_torch.py").write_text("import torch\n\n\ndef test_a():\n    pass\n")
    (project / "tests" / "test_mixed.py").write_text(textwrap.dedent("""\
        def test_torch_free():
            assert 1 + 1 == 2


        def test_needs_torchvision():
            import torchvision
            raise AssertionError("torchvision imported under --without-torch")
        """))
    (project / "tests" / "test_library.py").write_text(textwrap.dedent("""\
        import optional_torch_user


        def test_an_installed_library_sees_no_torch():
            assert not optional_torch_user.HAS_TORCH
        """))
    site_packages = tmp_path / "site-packages"
    site_packages.mkdir()
    (site_packages / "optional_torch_user.py").write_text(textwrap.dedent("""\
        try:
            import torch
            HAS_TORCH = True
        except ImportError:
            HAS_TORCH = False
        """))
    env = {**os.environ, "PYTHONPATH": str(site_packages)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q", "-rs", "--without-torch",
         "--rootdir", str(project), "tests"],
        cwd=project, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 passed, 2 skipped" in result.stdout, result.stdout
    assert "needs torch (imported at tests/test_module_needs_torch.py:1)" in result.stdout, result.stdout
    assert "needs torchvision (imported at tests/test_mixed.py:6)" in result.stdout, result.stdout


def test_ci_run_fails_before_installing_anything_without_python_3_13(tmp_path):
    """No pyenv Python 3.13: .ci/run stops with an error naming the fix, before the first pip install."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("pip", "python"):  # stand-ins that fail loudly if the script gets as far as them
        (bin_dir / tool).write_text("#!/bin/sh\necho \"$0 was run\" >&2\nexit 99\n")
        (bin_dir / tool).chmod(0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "needs Python 3.13" in result.stderr and "pyenv install 3.13" in result.stderr, result.stderr
    assert "was run" not in result.stderr


def test_every_command_line_is_installed_and_loads():
    """pyproject's [project.scripts] are what the installed distribution declares, and each names a function."""
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    installed = {e.name: e for e in importlib.metadata.distribution("fusionjax").entry_points
                 if e.group == "console_scripts"}
    assert {name: e.value for name, e in installed.items()} == declared, "reinstall: pip install -e ."
    for name, entry_point in installed.items():
        assert callable(entry_point.load()), name
