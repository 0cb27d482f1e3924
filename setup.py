"""Build mpcnp; the C ring kernels (mpcnp._ring) are optional.

The extension is declared by cffi (``cffi_modules``) with ``optional=True``: when no working C
compiler is present the build of ``mpcnp._ring`` is skipped with a warning, the install succeeds, and
mpcnp runs on its NumPy kernels (see ``mpcnp.ring.BACKEND``).
"""
import re
from pathlib import Path

from setuptools import find_packages, setup

version = re.search(r'__version__ = "([^"]+)"', Path("mpcnp/__init__.py").read_text()).group(1)

setup(
    name="mpcnp",
    version=version,
    description="Secure multi-party computation for machine learning on NumPy (Pond and SecureNN)",
    long_description=Path("README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["mpcnp", "mpcnp.*"]),
    package_data={"mpcnp": ["_ring.c", "_zp.c"]},
    setup_requires=["cffi>=1.15"],
    cffi_modules=["mpcnp/_ring_build.py:ffibuilder"],
    install_requires=["numpy>=1.24", "cffi>=1.15", "pyzmq>=25", "cryptography>=41"],
    # ml: nn.from_sklearn and nn.from_onnx, and the examples (never needed by mpcnp itself); progress: the
    # progress bars of model.fit and python -m benchmarks (a plain line without it); bench: the charts of
    # python -m benchmarks; test: setuptools, wheel and cffi because tests/test_build.py builds a wheel
    # without build isolation, ml because the importer and example tests run in CI, tqdm because the
    # progress bar is tested, matplotlib because tests/test_benchmarks.py draws the charts
    extras_require={"ml": ["scikit-learn>=1.3", "onnx>=1.14"],
                    "progress": ["tqdm>=4.60"],
                    "test": ["pytest>=7", "hypothesis>=6.80", "setuptools>=64", "wheel", "cffi>=1.15",
                             "scikit-learn>=1.3", "onnx>=1.14", "tqdm>=4.60", "matplotlib>=3.5"],
                    "bench": ["matplotlib>=3.5"]},
    zip_safe=False,
)
