"""Builds the Cython ring core; everything else is declared in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(
    ext_modules=cythonize(
        [Extension("streamenc._ring", ["csrc/_ring.pyx"], include_dirs=["csrc"], extra_compile_args=["-O2"])],
        compiler_directives={"language_level": "3"},
        include_path=["csrc"],
    ),
)
