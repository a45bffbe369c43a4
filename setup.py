"""Only declares the optional C extension; all metadata lives in pyproject.toml."""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension("geoae._fastcount", ["geoae/_fastcount.c"], optional=True, extra_compile_args=["-O3"]),
    ],
)
