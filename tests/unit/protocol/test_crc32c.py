"""CRC-32C: known vectors, and the C package and the fallback agree."""

from __future__ import annotations

import importlib
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from grete.protocol import crc32c as crc_module
from grete.protocol.crc32c import crc32c, crc32c_py

# Standard check values (RFC 3720 appendix B.4 and the CRC catalogue).
VECTORS = [
    (b"", 0),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
]


@pytest.mark.parametrize(("data", "expected"), VECTORS)
def test_known_vectors(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert crc32c_py(data) == expected


@given(st.binary(max_size=300), st.integers(0, 300))
def test_fallback_matches_c_and_continues(data: bytes, cut: int) -> None:
    assert crc32c_py(data) == crc32c(data)
    head, tail = data[:cut], data[cut:]
    assert crc32c_py(tail, crc32c_py(head)) == crc32c(data)
    assert crc32c(tail, crc32c(head)) == crc32c(data)


def test_accepts_memoryview_and_bytearray() -> None:
    data = b"123456789"
    assert crc32c(memoryview(data)) == crc32c_py(bytearray(data)) == 0xE3069283


def test_falls_back_without_c_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "crc32c", None)  # makes `import crc32c` fail
    try:
        reloaded = importlib.reload(crc_module)
        assert not reloaded.HAVE_C_CRC32C
        assert reloaded.crc32c is reloaded.crc32c_py
        assert reloaded.crc32c(b"123456789") == 0xE3069283
    finally:
        monkeypatch.undo()
        importlib.reload(crc_module)


def test_the_c_checksum_keeps_the_gil() -> None:
    """The package releases the GIL from 32 KiB unless told not to; the sender
    thread then waited up to the switch interval (5 ms) to get it back."""
    if not crc_module.HAVE_C_CRC32C:
        pytest.skip("the crc32c package is not installed")
    assert getattr(crc32c, "keywords", None) == {"gil_release_mode": 0}
    big = bytes(range(256)) * 1024  # past the package's 32 KiB threshold
    assert crc32c(big) == crc32c_py(big)
    assert crc32c(big, 12345) == crc32c_py(big, 12345)


def test_a_c_function_without_the_keyword_is_used_as_it_is() -> None:
    def old(data: bytes, value: int = 0) -> int:
        return crc32c_py(data, value)

    assert crc_module._holding_the_gil(old) is old
    assert crc_module._holding_the_gil(None) is None
