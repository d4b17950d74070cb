"""Kafka's flavour of the 32-bit MurmurHash2, as ``org.apache.kafka.common.utils.Utils.murmur2``.

The Java client's default partitioner sends a keyed record to partition
``toPositive(murmur2(key)) % numPartitions``; every client that wants to share
topics with Java producers (librdkafka's ``murmur2_random``, kafka-python, ...)
has to reproduce this hash bit for bit, including Java's signed 32-bit overflow.

Two implementations live here:

* :func:`murmur2_pure`, plain Python, always available;
* the C-backed (actually Rust) ``murmurhash2`` package when it is installed
  (``pip install grete[fast]``).  Its ``murmurhash2(key, seed)`` is the classic
  MurmurHash2 with the same tail handling as Kafka's, but it returns the hash
  as an *unsigned* 32-bit number and takes the seed as an unsigned 32-bit
  number.  Kafka's seed ``0x9747b28c`` is a negative ``int`` in Java, yet its
  bit pattern is the same, so we pass it unsigned and convert the result back
  to Java's signed view with :func:`_to_signed`.  For partitioning the sign
  does not matter at all, since ``toPositive`` masks the sign bit away.

The extension is checked against Kafka's own test vectors at import time: if a
future release changed its seed or tail semantics we would silently route keys
to other partitions than the Java client, which is far worse than being slow.

The extension releases the GIL on every call. Beside idle threads (a producer's
sender waiting in select) it is still the faster choice for one key; beside a
thread that is busy computing, each call may hand that thread the GIL and wait
for it back, a thread switch per key. Applications in that situation should
uninstall ``murmurhash2`` to keep the pure version, which never lets go of the
GIL. Many keys at once (the producers' keyed paths) go through
:func:`murmur2_lanes` without the extension, near its speed per key. Their
partition ids come from :func:`murmur2_partition_ids`, with or without the
extension: lanes again, the modulo included, and the GIL kept throughout (the
background producer's sender, handed the GIL at every key, used to cut batches
short). The figures are in docs/benchmarks.rst and DESIGN.md.
"""

from __future__ import annotations

import struct
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache
from itertools import repeat
from typing import Final, Protocol

__all__ = [
    "IMPLEMENTATION",
    "KAFKA_VECTORS",
    "SEED",
    "murmur2",
    "murmur2_c",
    "murmur2_lanes",
    "murmur2_pure",
    "positive_murmur2",
    "to_positive",
    "unsigned_murmur2_bytes",
    "unsigned_murmur2_many",
]

#: Kafka's seed, ``0x9747b28c`` (the Java ``int`` is negative; the bits are what count).
SEED: Final = 0x9747B28C
# murmur2's multiplier 0x5BD1E995 and shift 24 are written inline below: a literal is
# a constant load, a module global a dict lookup, in the per-key loop.
_POSITIVE: Final = 0x7FFFFFFF

#: The cases of Kafka's ``UtilsTest.testMurmur2`` (clients/src/test/java/org/apache/kafka/
#: common/utils/UtilsTest.java): key -> the signed ``int`` ``Utils.murmur2`` returns.
KAFKA_VECTORS: Final[dict[bytes, int]] = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def _to_signed(h: int) -> int:
    """The Java ``int`` with the bit pattern of the unsigned 32-bit ``h``."""
    return h - 0x100000000 if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Kafka's ``Utils.toPositive``: clear the sign bit (unlike ``abs`` for negatives)."""
    return n & _POSITIVE


def _murmur2_unsigned(data: bytes) -> int:
    """Kafka's murmur2 as an unsigned 32-bit number.

    Python ints never overflow, so products are masked to 32 bits to get
    Java's wrap-around; the right shifts are Java's ``>>>`` (logical), which is
    what ``>>`` on a non-negative Python int already is. ``h`` is masked once
    per block rather than after each step: ``(a * m) mod 2**32`` and
    ``(a ^ b) mod 2**32`` only depend on the low 32 bits of ``a`` and ``b``.
    """
    length = len(data)
    h = SEED ^ length
    tail = length & ~3
    if tail:
        unpack = _BLOCKS.get(tail)
        if unpack is None:
            unpack = _blocks_unpacker(tail)
        for k in unpack(data):
            k = (k * 0x5BD1E995) & 0xFFFFFFFF
            h = ((h * 0x5BD1E995) ^ ((k ^ (k >> 24)) * 0x5BD1E995)) & 0xFFFFFFFF

    # Kafka's switch falls through: 3 bytes left mixes all three, then multiplies once.
    rest = length - tail
    if rest:
        if rest == 3:
            h ^= data[tail + 2] << 16
        if rest >= 2:
            h ^= data[tail + 1] << 8
        h = ((h ^ data[tail]) * 0x5BD1E995) & 0xFFFFFFFF

    h ^= h >> 13
    h = (h * 0x5BD1E995) & 0xFFFFFFFF
    return h ^ (h >> 15)


# Little-endian 32-bit blocks of a key, by the key's whole-block byte length: one
# C call unpacks them all (keys are short, and come in few lengths). Little-endian
# regardless of the host: Kafka assembles each 4-byte block as
# data[i] | data[i+1] << 8 | ..., i.e. little-endian, on every JVM.
_BLOCKS: dict[int, Callable[[bytes], tuple[int, ...]]] = {}


def _blocks_unpacker(tail: int) -> Callable[[bytes], tuple[int, ...]]:
    unpack = struct.Struct(f"<{tail >> 2}I").unpack_from
    if len(_BLOCKS) < 256:  # bounded: odd key lengths must not grow it forever
        _BLOCKS[tail] = unpack
    return unpack


def murmur2_pure(data: bytes) -> int:
    """Kafka's ``Utils.murmur2(data)`` in pure Python: a signed 32-bit ``int`` like Java's."""
    return _to_signed(_murmur2_unsigned(data))


class _CHash(Protocol):
    """The signature of ``murmurhash2.murmurhash2``."""

    def __call__(self, key: bytes, seed: int) -> int: ...


def _load_c() -> _CHash | None:
    """The ``murmurhash2`` extension's function, or None if absent or not Kafka-compatible."""
    try:
        from murmurhash2 import murmurhash2 as c_hash
    except ImportError:
        return None
    try:
        for key, expected in KAFKA_VECTORS.items():
            if _to_signed(c_hash(key, SEED)) != expected:
                return None
        # The empty key takes neither the block loop nor the tail: check it too.
        if c_hash(b"", SEED) != _murmur2_unsigned(b""):
            return None
    except Exception:  # a broken build must cost speed, never correctness
        return None
    return c_hash


_c_hash: Final = _load_c()

#: Which implementation :func:`murmur2` and :func:`positive_murmur2` use: "murmurhash2" or "python".
IMPLEMENTATION: Final = "python" if _c_hash is None else "murmurhash2"


def _murmur2_c_signed(data: bytes) -> int:
    assert _c_hash is not None
    try:
        return _to_signed(_c_hash(data, SEED))
    except TypeError:
        # The extension only accepts bytes; bytearray/memoryview keys are rare enough
        # that converting on the exception path keeps the common path free of checks.
        return _to_signed(_c_hash(bytes(data), SEED))


#: The extension-backed murmur2 (signed, like :func:`murmur2_pure`), or None without it.
murmur2_c: Final[Callable[[bytes], int] | None] = None if _c_hash is None else _murmur2_c_signed


def murmur2(data: bytes) -> int:
    """Kafka's ``Utils.murmur2(data)``: a signed 32-bit ``int``, C-backed when possible."""
    if _c_hash is None:
        return murmur2_pure(data)
    return _murmur2_c_signed(data)


def _positive_pure(data: bytes) -> int:
    return _murmur2_unsigned(data) & _POSITIVE


def _positive_c(data: bytes) -> int:
    assert _c_hash is not None
    try:
        # No signed conversion needed: masking the sign bit gives the same result either way.
        return _c_hash(data, SEED) & _POSITIVE
    except TypeError:
        return _c_hash(bytes(data), SEED) & _POSITIVE


def _unsigned_c(c_hash: _CHash) -> Callable[[bytes], int]:
    # A closure rather than a module-level function so the hot path needs no None check.
    def unsigned(data: bytes) -> int:
        return c_hash(data, SEED)

    return unsigned


#: Unsigned murmur2 of a ``bytes`` object (exactly ``bytes``: the extension rejects other
#: buffers with TypeError), with the least Python overhead per call.  This is the partitioners'
#: hot path; they fall back to :func:`positive_murmur2` on TypeError.  (A plain function, not
#: ``functools.partial(..., seed=SEED)``: the keyword partial measured twice as slow.)
unsigned_murmur2_bytes: Final[Callable[[bytes], int]] = (
    _murmur2_unsigned if _c_hash is None else _unsigned_c(_c_hash)
)

#: ``toPositive(murmur2(data))``, the number the Java client takes modulo the partition count.
#: Bound once at import so the per-message call pays for no dispatch.
positive_murmur2: Final[Callable[[bytes], int]] = _positive_pure if _c_hash is None else _positive_c


def unsigned_murmur2_many(keys: Iterable[bytes]) -> Iterator[int]:
    """:data:`unsigned_murmur2_bytes` of each key (exactly ``bytes``): with the
    extension, a C-level ``map`` over it with no Python call per key; without
    it, :func:`murmur2_lanes` (much faster than the pure version key by key)."""
    if _c_hash is None:
        return iter(murmur2_lanes(keys if isinstance(keys, list) else list(keys)))
    return map(_c_hash, keys, repeat(SEED))


# Below this many keys of one length, key by key is as fast as lanes.
_LANES_MIN = 32


def murmur2_lanes(keys: list[bytes]) -> list[int]:
    """Unsigned murmur2 of many keys at once, in pure Python: keys of one
    length are hashed together, one 64-bit lane of a big ``int`` each, so each
    step of the hash is one big-int operation for all of them (the
    interpreter's work per step is paid once, not per key; and it holds the
    GIL throughout, unlike the extension, which releases it per call)."""
    n = len(keys)
    if n < _LANES_MIN:
        return list(map(_murmur2_unsigned, keys))
    lengths = list(map(len, keys))
    first = lengths[0]
    if lengths.count(first) == n:
        return _same_length_lanes(keys, first)
    by_length: dict[int, list[int]] = {}
    for i, length in enumerate(lengths):
        by_length.setdefault(length, []).append(i)
    out = [0] * n
    for length, indexes in by_length.items():
        group = list(map(keys.__getitem__, indexes))
        if len(group) < _LANES_MIN:
            hashes = list(map(_murmur2_unsigned, group))
        else:
            hashes = _same_length_lanes(group, length)
        for i, h in zip(indexes, hashes, strict=True):
            out[i] = h
    return out


def _same_length_lanes(keys: list[bytes], length: int) -> list[int]:
    """:func:`murmur2_lanes` of keys that are all ``length`` bytes long."""
    n = len(keys)
    hashes = array("Q", _lanes_hash(keys, length).to_bytes(8 * n, "little"))
    if sys.byteorder == "big":
        hashes.byteswap()
    return hashes.tolist()


def _lanes_hash(keys: list[bytes], length: int) -> int:
    """The unsigned murmur2 of ``keys`` (all ``length`` bytes long), as one big
    ``int`` holding hash ``i`` in bits ``64*i .. 64*i+31`` (and zeros above).

    Key ``i`` lives in bits ``64*i .. 64*i+31`` of each big int; the upper 32
    bits of a lane absorb a 32 x 31-bit product without carrying into the next
    lane, and a mask clears them after each multiplication. Right shifts pull
    the next lane's low bits into bits 32.. of a lane, where the mask drops them.
    Blocks are read little-endian whatever the host (Kafka assembles
    ``data[i] | data[i+1] << 8 | ...``): byte ``j`` of a block goes to byte ``j``
    of its lane, and the int is read little-endian.
    """
    n = len(keys)
    joined = b"".join(keys)
    size = 8 * n
    mask = _lanes_of(0xFFFFFFFF, n)
    h = _lanes_of((SEED ^ length) & 0xFFFFFFFF, n)
    lanes = bytearray(size)
    blocks = length >> 2
    for block in range(blocks):
        at = 4 * block
        for j in range(4):
            lanes[j::8] = joined[at + j :: length]
        k = (int.from_bytes(lanes, "little") * 0x5BD1E995) & mask
        k = (k ^ ((k >> 24) & mask)) * 0x5BD1E995
        if block:
            h = ((h * 0x5BD1E995) ^ k) & mask
        else:  # h is the same in every lane: its product too, one small int's
            h = (_lanes_of(((SEED ^ length) * 0x5BD1E995) & 0xFFFFFFFF, n) ^ k) & mask
    rest = length & 3
    if rest:
        # Kafka's switch falls through: the tail bytes are xored in, then one multiply.
        tail = bytearray(size)
        at = 4 * blocks
        for j in range(rest):
            tail[j::8] = joined[at + j :: length]
        h = ((h ^ int.from_bytes(tail, "little")) * 0x5BD1E995) & mask
    h ^= (h >> 13) & mask
    h = (h * 0x5BD1E995) & mask
    h ^= (h >> 15) & mask
    return h


@lru_cache(maxsize=32)
def _lanes_of(value: int, n: int) -> int:
    """``value`` (< 2**64) in each of ``n`` 64-bit lanes of one big int.
    Cached: the producers hash stages of the same few sizes over and over."""
    return int.from_bytes(value.to_bytes(8, "little") * n, "little")


def murmur2_partition_ids(keys: list[bytes], count: int, length: int | None = None) -> bytes | None:
    """``(murmur2(key) & 0x7fffffff) % count`` of each key, one byte each (the
    Java client's partition for the key), computed in lanes
    (:func:`_lanes_hash`), modulo included; None unless ``count`` is 1..256
    and at least :data:`_LANES_MIN` keys share a length (keys must be
    ``bytes``: others raise ``TypeError``). Keys of mixed lengths are hashed
    one length at a time, the few of a rare length key by key.

    The modulo divides by multiplying: for ``x < 2**31`` and a ``count`` of
    ``L`` bits, ``x // count == (x * m) >> (31 + L)`` with
    ``m = ceil(2**(31 + L) / count)`` (``m * count`` exceeds ``2**(31 + L)`` by
    less than ``count``, so the error stays below ``1 / count``). ``m`` is
    under ``2**32``, so ``x * m`` fits a 64-bit lane, and the quotient (under
    ``2**(32 - L)``) fits the ``33 - L`` bits a lane keeps after the shift.
    ``x - q * count`` borrows from no other lane, since ``q * count <= x``.
    It costs less than the extension's hashes and a Python modulo per key.

    ``length``: the length every key has, when the caller knows it (a placed
    stage's keys were measured for their sizes already): no pass to find it.
    """
    n = len(keys)
    if n < _LANES_MIN or not 1 <= count <= 256:
        return None
    if length is not None:
        return _lanes_modulo(_lanes_hash(keys, length), n, count)
    lengths = list(map(len, keys))
    first = lengths[0]
    if lengths.count(first) == n:
        return _lanes_modulo(_lanes_hash(keys, first), n, count)
    # Mixed lengths ("user-9", "user-10", ...): one lanes pass per common
    # length. Worth it even beside the extension, which releases the GIL at
    # every key (see DESIGN.md on the background stage).
    by_length: dict[int, list[int]] = {}
    for i, length in enumerate(lengths):
        by_length.setdefault(length, []).append(i)
    if max(map(len, by_length.values())) < _LANES_MIN:
        return None  # no length common enough: key by key is as fast
    out = bytearray(n)
    rare: list[int] = []
    for length, indexes in by_length.items():
        if len(indexes) < _LANES_MIN:
            rare += indexes
            continue
        group = list(map(keys.__getitem__, indexes))
        ids = _lanes_modulo(_lanes_hash(group, length), len(group), count)
        for i, pid in zip(indexes, ids, strict=True):
            out[i] = pid
    if rare:
        hashes = unsigned_murmur2_many(list(map(keys.__getitem__, rare)))
        for i, h in zip(rare, hashes, strict=True):
            out[i] = (h & 0x7FFFFFFF) % count
    return bytes(out)


def _lanes_modulo(h: int, n: int, count: int) -> bytes:
    """``(lane & 0x7fffffff) % count`` of each of ``n`` 64-bit lanes of ``h``
    (each under ``2**32``), one byte each (``count`` is 1..256)."""
    x = h & _lanes_of(0x7FFFFFFF, n)
    if count & (count - 1) == 0:  # a power of two (1 included): a mask
        ids = x & _lanes_of(count - 1, n)
    else:
        bits = count.bit_length()
        shift = 31 + bits
        m = -((-1 << shift) // count)  # ceil(2**shift / count)
        q = ((x * m) >> shift) & _lanes_of((1 << (33 - bits)) - 1, n)
        ids = x - q * count
    # Each id is its lane's low byte.
    return ids.to_bytes(8 * n, "little")[::8]
