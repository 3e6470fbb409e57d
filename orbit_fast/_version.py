"""The package's version: the one place it is written (pyproject.toml reads it from here).

A module of its own so that the CLI, the hub and the state backup can name the version without
importing the package's top (orbit_fast/__init__.py), which only re-exports.
"""

__version__ = "0.1.0"
