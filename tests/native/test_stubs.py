"""Every compiled module has a .pyi stub that names what the module exports, with the same
parameters: mypy checks callers against the stubs, and the stubs against the twin's contract
(orbit_fast._native.Kernels), so a stub that lags behind its .pyx would hide real errors."""

from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest

import orbit_fast._native
from orbit_fast._native import COMPILED

NATIVE = Path(orbit_fast._native.__file__).parent
EXT = Path(__file__).resolve().parents[2] / "ext"


def _stub(name: str) -> ast.Module:
    return ast.parse((NATIVE / f"{name}.pyi").read_text(), f"{name}.pyi")


def _declared(body: list[ast.stmt]) -> dict[str, ast.stmt]:
    """Public names a stub body declares (imports and type aliases it borrows are not exports)."""
    out: dict[str, ast.stmt] = {}
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
    return {k: v for k, v in out.items() if not k.startswith("_") or k == "__init__"}


def _params(fn: ast.FunctionDef) -> list[tuple[str, bool]]:
    """(name, has a default) of each parameter, as inspect.signature shows them."""
    args = fn.args.args
    defaults = [False] * (len(args) - len(fn.args.defaults)) + [True] * len(fn.args.defaults)
    return [(a.arg, d) for a, d in zip(args, defaults, strict=True)]


def _runtime_params(obj) -> list[tuple[str, bool]]:
    sig = inspect.signature(obj)
    return [(p.name, p.default is not p.empty) for p in sig.parameters.values()]


@pytest.mark.parametrize("name", COMPILED)
def test_stub_names_what_the_module_exports(name: str) -> None:
    mod = importlib.import_module(f"orbit_fast._native.{name}")
    exported = {k for k in vars(mod) if not k.startswith("_")}
    assert set(_declared(_stub(name).body)) == exported


@pytest.mark.parametrize("name", COMPILED)
def test_stub_signatures_match_the_module(name: str) -> None:
    mod = importlib.import_module(f"orbit_fast._native.{name}")
    for export, node in _declared(_stub(name).body).items():
        obj = getattr(mod, export)
        if isinstance(node, ast.FunctionDef):
            assert _params(node) == _runtime_params(obj), f"{name}.{export}"
        elif isinstance(node, ast.ClassDef):
            members = _declared(node.body)
            public = {k for k in vars(obj) if not k.startswith("_")}
            assert set(members) - {"__init__"} == public, f"{name}.{export}"
            for member, sub in members.items():
                # a cdef class's __init__ shows no signature; its twin's test covers the call
                if isinstance(sub, ast.FunctionDef) and member != "__init__" and not any(
                    isinstance(d, ast.Name) and d.id == "property" for d in sub.decorator_list
                ):
                    got = _runtime_params(getattr(obj, member))
                    assert _params(sub) == got, f"{name}.{export}.{member}"


def test_every_extension_has_a_stub() -> None:
    sources = {p.stem for p in EXT.glob("*.pyx")}
    stubs = {p.stem for p in NATIVE.glob("*.pyi")}
    assert sources == stubs == set(COMPILED)
