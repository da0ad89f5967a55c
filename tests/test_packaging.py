"""The repository as a package: `pip install -e .` gives `import vae` anywhere, and plain `pytest` runs the suite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTEST_ADDOPTS")}


@pytest.mark.slow  # a fresh interpreter (or pip): 3-5 s, out of the quick loop
def test_plain_pytest_imports_the_package_without_python_m():
    """`pytest` (the console script, not `python -m pytest`) does not put the current folder on sys.path."""
    result = subprocess.run(
        [BIN / "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests/test_loss.py"],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "tests collected" in result.stdout or "test_loss.py::" in result.stdout


@pytest.mark.slow  # a fresh interpreter (or pip): 3-5 s, out of the quick loop
def test_editable_install_imports_vae_from_anywhere(tmp_path):
    """`pip install -e .` (offline: the venv's own setuptools) installs the package; it imports from another folder."""
    prefix = tmp_path / "prefix with spaces"
    install = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--prefix",
            prefix,
            "-e",
            ".",
        ],
        cwd=ROOT,
        env=clean_env() | {"PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    site_dir = next(prefix.glob("lib/python*/site-packages"))
    code = f"import site; site.addsitedir({str(site_dir)!r}); import vae.model, vae.architecture; print(vae.model.__file__)"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=elsewhere, env=clean_env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert Path(result.stdout.strip()) == ROOT / "vae" / "model.py"


def test_wheel_holds_the_package_and_the_app_requirements(tmp_path):
    source = tmp_path / "source"  # setuptools writes build/ into the folder it builds: a copy, not the clone
    shutil.copytree(ROOT / "vae", source / "vae", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "requirements.txt", "README.md"):
        shutil.copy(ROOT / name, source / name)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", tmp_path, "."],
        cwd=source,
        env=clean_env() | {"PIP_NO_INDEX": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = tmp_path.glob("mnist_vae_studio-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    packaged = {name.split("/")[0] for name in names if not name.startswith("mnist_vae_studio-")}
    assert packaged == {"vae"}, "only the package: app.py, train.py, bench/ and tests/ run from a clone"
    assert {f"vae/{p.name}" for p in (ROOT / "vae").glob("*.py")} <= set(names)
    metadata = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist")]
    required = [r.split(">")[0].split("<")[0] for r in requires if "extra ==" not in r]
    onnx_extra = [r.split(">")[0] for r in requires if 'extra == "onnx"' in r]

    def names(requirements: str) -> list[str]:
        lines = (ROOT / requirements).read_text().splitlines()
        return [line.split("#")[0].strip().split(">")[0].split("<")[0] for line in lines if line.split("#")[0].strip()]

    assert required == names("requirements.txt"), "the package needs what the app needs: requirements.txt, one source"
    assert onnx_extra == names("requirements-onnx.txt"), "pip install 'mnist-vae-studio[onnx]' = requirements-onnx.txt"


@pytest.mark.slow  # a fresh interpreter (or pip): 3-5 s, out of the quick loop
def test_importing_the_package_changes_no_global_state():
    """No module switches matplotlib's backend or touches the umask when imported (figures are drawn without pyplot)."""
    code = (
        "import os, matplotlib; matplotlib.use('svg'); os.umask(0o027)\n"
        "import vae.figures, vae.folder, vae.export, vae.training, vae.steering, app\n"
        "assert matplotlib.get_backend() == 'svg', matplotlib.get_backend()\n"
        "assert os.umask(0o022) == 0o027\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=clean_env(), capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
