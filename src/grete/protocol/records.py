"""Record batch v2 (magic 2): a column-oriented encoder and a defensive decoder.

The names everyone imports from here; the code lives by job in

- :mod:`grete.protocol.record_format`: the batch header's fields and attribute
  bits, ``BATCH_OVERHEAD``, and the varint tables the encoders share;
- :mod:`grete.protocol.record_encode`: :func:`encode_batch`, column by column;
- :mod:`grete.protocol.record_uniform`: its paths for same-length records;
- :mod:`grete.protocol.record_runs`: :func:`encode_record_run` and
  :func:`frame_record_runs`, a batch encoded a part at a time;
- :mod:`grete.protocol.record_decode`: :func:`decode_batches`.

Also re-exported: the private names the tests reach through this module. ``_L``
and ``_O`` (the tables' bounds, rebound as they grow) are read from
``record_format`` at each access, and setting a name here (``monkeypatch``) sets
it in every module above that binds it, where the code looks it up.
"""

from __future__ import annotations

import sys
from types import ModuleType

from grete.errors import ProtocolError as ProtocolError
from grete.protocol import (
    record_decode,
    record_encode,
    record_format,
    record_runs,
    record_uniform,
)
from grete.protocol.record_decode import Record, RecordBatch, decode_batches
from grete.protocol.record_encode import _encode_columns as _encode_columns
from grete.protocol.record_encode import _encode_records_slow as _encode_records_slow
from grete.protocol.record_encode import _header_columns as _header_columns
from grete.protocol.record_encode import encode_batch, record_size
from grete.protocol.record_format import _FIXED as _FIXED
from grete.protocol.record_format import _LEN as _LEN
from grete.protocol.record_format import _LENZ as _LENZ
from grete.protocol.record_format import _M as _M
from grete.protocol.record_format import _MIN_TABLE as _MIN_TABLE
from grete.protocol.record_format import _PFX_TS0_NOKEY as _PFX_TS0_NOKEY
from grete.protocol.record_format import _SIZE as _SIZE
from grete.protocol.record_format import _TSA_SIZE as _TSA_SIZE
from grete.protocol.record_format import BATCH_OVERHEAD, Header
from grete.protocol.record_format import _zz as _zz
from grete.protocol.record_runs import encode_record_run, frame_record_runs
from grete.protocol.record_uniform import _encode_uniform_ts as _encode_uniform_ts
from grete.protocol.record_uniform import _wide_heads as _wide_heads

__all__ = [
    "BATCH_OVERHEAD",
    "Header",
    "Record",
    "RecordBatch",
    "decode_batches",
    "encode_batch",
    "encode_record_run",
    "frame_record_runs",
    "record_size",
]

_LIVE = frozenset(("_L", "_O"))
_PARTS = (record_format, record_uniform, record_encode, record_runs, record_decode)


def __getattr__(name: str) -> int:
    if name in _LIVE:
        value: int = getattr(record_format, name)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Facade(ModuleType):
    def __setattr__(self, name: str, value: object) -> None:
        for part in _PARTS:
            if name in vars(part):
                setattr(part, name, value)
        if name not in _LIVE:
            super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Facade
