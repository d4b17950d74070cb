"""CRC-32C (Castagnoli), the checksum of record batch v2.

The C-backed ``crc32c`` package (extra ``grete[crc]``) is used when importable: the
pure-Python fallback is correct but costs roughly a microsecond per 8 bytes, which
dominates batch encoding once batches reach tens of kilobytes.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

__all__ = ["HAVE_C_CRC32C", "crc32c", "crc32c_py"]

_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _make_tables() -> list[list[int]]:
    # Slicing-by-8: eight 256-entry tables let the fallback consume 8 bytes per loop
    # iteration, which is ~4x faster in CPython than a byte-at-a-time loop.
    t0 = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        t0.append(c)
    tables = [t0]
    for _ in range(7):
        prev = tables[-1]
        tables.append([(prev[n] >> 8) ^ t0[prev[n] & 0xFF] for n in range(256)])
    return tables


# Built by the first pure-Python call: users of the C function never need them.
_T: list[list[int]] = []


def crc32c_py(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    """Pure-Python CRC-32C of ``data``, continuing from a previous ``value``."""
    if not _T:
        _T[:] = _make_tables()  # one atomic replacement, whichever thread gets here
    t0, t1, t2, t3, t4, t5, t6, t7 = _T
    crc = value ^ 0xFFFFFFFF
    buf = bytes(data)
    n = len(buf)
    i = 0
    stop = n - (n & 7)
    # int.from_bytes over 8-byte windows beats indexing eight separate bytes.
    from_bytes = int.from_bytes
    while i < stop:
        word = from_bytes(buf[i : i + 8], "little") ^ crc
        crc = (
            t7[word & 0xFF]
            ^ t6[(word >> 8) & 0xFF]
            ^ t5[(word >> 16) & 0xFF]
            ^ t4[(word >> 24) & 0xFF]
            ^ t3[(word >> 32) & 0xFF]
            ^ t2[(word >> 40) & 0xFF]
            ^ t1[(word >> 48) & 0xFF]
            ^ t0[word >> 56]
        )
        i += 8
    while i < n:
        crc = (crc >> 8) ^ t0[(crc ^ buf[i]) & 0xFF]
        i += 1
    return crc ^ 0xFFFFFFFF


def _load_c_crc32c() -> Callable[..., int] | None:
    """The C function of the ``crc32c`` package, or None when it is not installed.

    The package's ``__init__`` calls ``importlib.metadata.version()`` and imports its
    command-line tool (argparse, email, zipfile, ...): some 4 MiB of resident memory
    for one C function. Unless something imported the package already, only its
    extension module is loaded, the way the import system would load it.
    """
    if "crc32c" in sys.modules:  # imported already (or None: blocked on purpose)
        return getattr(sys.modules["crc32c"], "crc32c", None)
    try:
        package = importlib.util.find_spec("crc32c")
        locations = package.submodule_search_locations if package is not None else None
        if not locations:
            return None  # the optional extra is not installed
        spec = importlib.machinery.PathFinder.find_spec("crc32c._crc32c", list(locations))
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            return cast("Callable[..., int]", module.crc32c)
    except (ImportError, AttributeError, OSError):
        pass
    try:  # a layout this loader does not know: import the package as usual
        from crc32c import crc32c as c_crc32c
    except ImportError:
        return None
    return c_crc32c


def _holding_the_gil(fn: Callable[..., int] | None) -> Callable[..., int] | None:
    """``fn`` told never to release the GIL (``gil_release_mode=0``). By default
    the package releases it for data from 32 KiB, and a background producer's
    sender then waited for the GIL back for up to the interpreter's switch
    interval (5 ms) while produce() held it: some 100 times what the checksum
    of a 1 MiB batch takes (~45 us)."""
    if fn is None:
        return None
    try:
        fn(b"", 0, gil_release_mode=0)
    except TypeError:  # a version without the keyword
        return fn
    return partial(fn, gil_release_mode=0)


_c_crc32c = _holding_the_gil(_load_c_crc32c())

HAVE_C_CRC32C = _c_crc32c is not None

if TYPE_CHECKING:

    def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
        """CRC-32C of ``data``, continuing from a previous ``value``."""
        ...

else:
    # Bound directly (no Python wrapper): the encoder calls it for every batch.
    crc32c = _c_crc32c if _c_crc32c is not None else crc32c_py
