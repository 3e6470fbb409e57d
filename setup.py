"""Declares the Cython extensions built from ext/; all other metadata is in pyproject.toml."""

import os

from Cython.Build import cythonize
from setuptools import Extension, setup


def _cflags() -> list[str]:
    # The interpreter's own CFLAGS may say -O2 or -O3; the last -O wins, so set ours explicitly.
    if os.environ.get("ORBIT_BUILD_DEBUG") == "1":
        return ["-O0", "-g", "-Wall", "-Wextra"]
    flags = ["-O3", "-g0", "-Wall", "-Wextra", "-Wno-unused-function"]
    if os.environ.get("ORBIT_BUILD_SANITIZE") == "1":
        flags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
    return flags


def _ext(name: str, sources: list[str]) -> Extension:
    link = ["-fsanitize=address,undefined"] if os.environ.get("ORBIT_BUILD_SANITIZE") == "1" else []
    return Extension(
        f"orbit_fast._native.{name}", sources, extra_compile_args=_cflags(), extra_link_args=link
    )


setup(
    ext_modules=cythonize(
        # orbit_fast._native.COMPILED lists the same modules (checked at import).
        [_ext(name, [f"ext/{name}.pyx"]) for name in ("blocks", "cdc", "scan", "table")],
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    )
)
