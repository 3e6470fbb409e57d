"""The compiled block kernels against their pure-Python twins."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from orbit_fast._native import blocks, kernels, reference


def test_native_is_selected_and_current() -> None:
    assert kernels().is_zero is blocks.is_zero
    assert blocks.ABI == reference.ABI


def test_reference_selected_by_env(monkeypatch) -> None:
    monkeypatch.setenv("ORBIT_KERNEL", "reference")
    assert kernels() is reference


@given(st.binary(max_size=5000))
def test_is_zero_matches_reference(data: bytes) -> None:
    assert blocks.is_zero(data) == reference.is_zero(data)


@given(st.integers(0, 3000), st.integers(0, 2999))
def test_is_zero_finds_one_byte_anywhere(n: int, pos: int) -> None:
    buf = bytearray(n)
    assert blocks.is_zero(buf)
    if pos < n:
        buf[pos] = 1
        assert not blocks.is_zero(buf)
        assert not reference.is_zero(buf)


def test_is_zero_accepts_memoryview_slices() -> None:
    buf = bytearray(1 << 20)
    buf[-1] = 7
    assert blocks.is_zero(memoryview(buf)[:-1])
    assert not blocks.is_zero(memoryview(buf)[1:])
