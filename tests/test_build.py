"""Installing and importing mpcnp: the forced NumPy kernels, and a machine without a C compiler."""
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROGRAM = """
import numpy as np, mpcnp as mp
from mpcnp import ring
def main():
    x = mp.private(lambda: np.array([[1.5, -2.0], [0.5, 3.0]]))
    return (mp.relu(x @ x) * 2).reveal()
print(ring.BACKEND, mp.run(main)["server0"].tolist())
"""


def run_python(code: str, *flags: str, cwd=None, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, **env})


def test_forced_numpy_kernels_compute_the_same_results():
    forced = run_python(PROGRAM, MPCNP_RING="numpy")
    default = run_python(PROGRAM)
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.split()[0] == "numpy"
    assert "KernelWarning" not in forced.stderr     # asked for: no warning
    assert forced.stdout.split(maxsplit=1)[1] == default.stdout.split(maxsplit=1)[1]
    assert forced.stdout.split(maxsplit=1)[1].strip() == "[[2.5, 0.0], [4.5, 16.0]]"


def test_install_without_a_c_compiler_falls_back_to_numpy(tmp_path):
    """A wheel built with a compiler that always fails has no extension; importing it warns in one
    line and runs on the NumPy kernels."""
    source = tmp_path / "src"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "*.so", "__pycache__", ".hypothesis", ".pytest_cache"))
    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q",
                            "-w", str(wheels), str(source)], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "CC": "/bin/false", "CXX": "/bin/false"})
    assert build.returncode == 0, build.stderr
    (wheel,) = wheels.glob("mpcnp-*.whl")
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        assert not [n for n in archive.namelist() if n.endswith(".so")]
        archive.extractall(installed)
    # Only the wheel's copy may be importable: "python -c" puts the working directory first on
    # sys.path (run from tmp_path), and an editable install of mpcnp registers an import hook from a
    # .pth file, which -S (no site processing) leaves out; the dependencies come from site-packages.
    paths = [str(installed), *site.getsitepackages()]
    result = run_python(f"import sys; sys.path[:0] = {paths!r}\n" + PROGRAM, "-S", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == "numpy"
    warning_lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warning_lines) == 1 and "KernelWarning" in warning_lines[0], result.stderr
    assert result.stdout.split(maxsplit=1)[1].strip() == "[[2.5, 0.0], [4.5, 16.0]]"


def test_python_m_mpcnp_reports_the_kernels():
    result = subprocess.run([sys.executable, "-m", "mpcnp"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "ring kernels:" in result.stdout


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None,
                    reason="this machine has no C compiler: the NumPy fallback is the expected result")
def test_a_machine_with_a_compiler_gets_the_compiled_kernels():
    """Where a C compiler exists the install must have built the extension: a broken build would
    otherwise pass every test on the (slower) NumPy kernels."""
    result = run_python("from mpcnp import ring; print(ring.BACKEND)", MPCNP_RING="")
    assert result.stdout.strip() in ("c-avx512", "c-portable"), result.stderr
