"""Partitioners: Kafka compatibility of the hash, and the behaviour of each strategy."""

from __future__ import annotations

import random
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from grete import _murmur2
from grete._murmur2 import (
    KAFKA_VECTORS,
    murmur2,
    murmur2_c,
    murmur2_lanes,
    murmur2_pure,
    positive_murmur2,
    to_positive,
    unsigned_murmur2_bytes,
)
from grete.partitioners import (
    BasePartitioner,
    DefaultPartitioner,
    HashingPartitioner,
    Partitioner,
    RoundRobinPartitioner,
    StickyPartitioner,
    hashing_partitioner,
    partition_id_for_key,
    random_partitioner,
)

from ._effort import effort


@dataclass(frozen=True)
class Part:
    id: int
    topic: str = "t"


def parts(n: int, topic: str = "t") -> list[Part]:
    return [Part(i, topic) for i in range(n)]


# --- murmur2 -------------------------------------------------------------------------------

# Kafka's UtilsTest.testMurmur2, copied as data (key -> Java signed int).
UTILS_TEST_VECTORS = [
    (b"21", -973932308),
    (b"foobar", -790332482),
    (b"a-little-bit-long-string", -985981536),
    (b"a-little-bit-longer-string", -1486304829),
    (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    (b"abc", 479470107),
]


def test_module_vectors_are_kafkas() -> None:
    assert dict(UTILS_TEST_VECTORS) == KAFKA_VECTORS


@pytest.mark.parametrize(("key", "expected"), UTILS_TEST_VECTORS)
def test_pure_murmur2_matches_kafka(key: bytes, expected: int) -> None:
    assert murmur2_pure(key) == expected


@pytest.mark.parametrize(("key", "expected"), UTILS_TEST_VECTORS)
def test_default_murmur2_matches_kafka(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected
    assert positive_murmur2(key) == expected & 0x7FFFFFFF
    assert unsigned_murmur2_bytes(key) == expected & 0xFFFFFFFF


@pytest.mark.parametrize(("key", "expected"), UTILS_TEST_VECTORS)
def test_c_murmur2_matches_kafka(key: bytes, expected: int) -> None:
    if murmur2_c is None:
        pytest.skip("murmurhash2 is not installed (or failed its self-check)")
    assert murmur2_c(key) == expected


def test_murmurhash2_package_is_used_when_installed() -> None:
    # The dev environment has it; if this fails the import-time self-check rejected it,
    # which means the package changed behaviour and deserves a look.
    pytest.importorskip("murmurhash2")
    assert _murmur2.IMPLEMENTATION == "murmurhash2"
    assert murmur2_c is not None


def test_murmurhash2_package_raw_output_is_unsigned_kafka() -> None:
    # What the adaptation in _murmur2 relies on: same bits as Kafka, unsigned, unsigned seed.
    mh = pytest.importorskip("murmurhash2")
    assert mh.murmurhash2(b"21", 0x9747B28C) == -973932308 + 2**32
    assert mh.murmurhash2(b"abc", 0x9747B28C) == 479470107


def test_every_tail_length_and_empty_key() -> None:
    data = bytes(range(256)) * 2
    for n in range(len(data)):
        key = data[:n]
        assert murmur2_pure(key) == murmur2(key)
        assert -(2**31) <= murmur2_pure(key) < 2**31


def test_bytes_like_keys() -> None:
    for key, expected in UTILS_TEST_VECTORS:
        assert murmur2(bytearray(key)) == expected  # type: ignore[arg-type]
        assert murmur2(memoryview(key)) == expected  # type: ignore[arg-type]
        assert positive_murmur2(bytearray(key)) == to_positive(expected)  # type: ignore[arg-type]
        assert murmur2_pure(memoryview(key)) == expected  # type: ignore[arg-type]


def test_to_positive_is_not_abs() -> None:
    assert to_positive(-1) == 0x7FFFFFFF
    assert to_positive(-(2**31)) == 0
    assert to_positive(5) == 5


@settings(max_examples=effort(2000, 200))
@given(st.binary(max_size=300))
def test_c_and_pure_agree(key: bytes) -> None:
    if murmur2_c is None:
        pytest.skip("murmurhash2 is not installed")
    assert murmur2_c(key) == murmur2_pure(key)


def _one_by_one(keys: list[bytes]) -> list[int]:
    return [murmur2_pure(k) & 0xFFFFFFFF for k in keys]


def test_lanes_match_kafka_vectors_and_every_length() -> None:
    vectors = list(UTILS_TEST_VECTORS) * 40  # past the lanes threshold, mixed lengths
    assert [_murmur2._to_signed(h) for h in murmur2_lanes([k for k, _ in vectors])] == [
        expected for _, expected in vectors
    ]
    data = bytes(range(256))
    for length in range(70):  # every block count and tail, the empty key included
        keys = [data[i : i + length] for i in range(40)]
        assert murmur2_lanes(keys) == _one_by_one(keys), length


@settings(max_examples=effort(300, 40))
@given(
    st.lists(st.binary(max_size=40), max_size=120),
    st.lists(st.binary(min_size=16, max_size=16), max_size=80),
)
def test_lanes_agree_with_key_by_key(mixed: list[bytes], same: list[bytes]) -> None:
    # Mixed lengths (grouped by length, small groups key by key) and one length.
    for keys in (mixed, same, mixed + same):
        assert murmur2_lanes(keys) == _one_by_one(keys)


def test_many_without_the_extension_uses_lanes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_murmur2, "_c_hash", None)
    keys = [b"key-%d" % i for i in range(500)]
    assert list(_murmur2.unsigned_murmur2_many(keys)) == _one_by_one(keys)
    assert list(_murmur2.unsigned_murmur2_many(iter(keys))) == _one_by_one(keys)


# --- hashing -------------------------------------------------------------------------------


def test_partition_id_for_key_known_values() -> None:
    # toPositive(-790332482) % 50 == 16: the well-known "foobar" example.
    assert partition_id_for_key(b"foobar", 50) == 16
    for key, expected in UTILS_TEST_VECTORS:
        for n in (1, 3, 7, 12, 100):
            assert partition_id_for_key(key, n) == (expected & 0x7FFFFFFF) % n


@pytest.mark.parametrize("partitioner", [hashing_partitioner, StickyPartitioner()])
def test_keyed_partition_is_java_partition(partitioner: Partitioner[Part]) -> None:
    for key, expected in UTILS_TEST_VECTORS:
        for n in (1, 2, 7, 12):
            assert partitioner(parts(n), key).id == (expected & 0x7FFFFFFF) % n


@pytest.mark.parametrize("partitioner", [hashing_partitioner, StickyPartitioner()])
def test_out_of_order_partitions_still_map_by_id(partitioner: Partitioner[Part]) -> None:
    rng = random.Random(7)
    for i in range(500):
        key = f"key-{i}".encode()
        shuffled = parts(7)
        rng.shuffle(shuffled)
        assert partitioner(shuffled, key).id == partition_id_for_key(key, 7)


def test_hashing_partitioner_subset_of_ids_is_deterministic() -> None:
    # Not a whole topic (ids 10..14): no Java answer exists; we must still be stable.
    subset = [Part(i) for i in (14, 10, 12, 11, 13)]
    for i in range(100):
        key = f"k{i}".encode()
        first = hashing_partitioner(subset, key)
        assert first in subset
        assert hashing_partitioner(list(reversed(subset)), key) == first
        assert first.id == 10 + partition_id_for_key(key, 5)


def test_hashing_partitioner_null_key_is_random() -> None:
    random.seed(1)
    seen = Counter(hashing_partitioner(parts(4), None).id for _ in range(4000))
    assert set(seen) == {0, 1, 2, 3}
    assert min(seen.values()) > 800


def test_hashing_partitioner_custom_hash_func() -> None:
    p = HashingPartitioner(hash_func=lambda key: -len(key))
    # toPositive(-3) = 0x7ffffffd; % 5 == 2
    assert p(parts(5), b"abc").id == 0x7FFFFFFD % 5
    shuffled = list(reversed(parts(5)))
    assert p(shuffled, b"abc").id == 0x7FFFFFFD % 5


def test_hashing_partitioner_accepts_bytearray_key() -> None:
    for key, expected in UTILS_TEST_VECTORS:
        assert hashing_partitioner(parts(7), bytearray(key)).id == (expected & 0x7FFFFFFF) % 7  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "partitioner",
    [random_partitioner, hashing_partitioner, RoundRobinPartitioner(), StickyPartitioner()],
)
@pytest.mark.parametrize("key", [None, b"k"])
def test_no_partitions_is_a_clear_error(partitioner: Partitioner[Part], key: bytes | None) -> None:
    with pytest.raises(ValueError, match="no partitions"):
        partitioner([], key)


# --- random and round robin ----------------------------------------------------------------


def test_random_partitioner_distribution() -> None:
    random.seed(42)
    ps = parts(5)
    counts = Counter(random_partitioner(ps, b"same key").id for _ in range(10_000))
    assert set(counts) == set(range(5))
    # 2000 expected each; 1800 is > 5 standard deviations (sd ~ 40) below.
    assert all(1800 < c < 2200 for c in counts.values())


def test_round_robin_cycles_evenly() -> None:
    rr = RoundRobinPartitioner()
    ps = parts(3)
    assert [rr(ps, None).id for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    counts = Counter(rr(ps, b"key ignored").id for _ in range(3000))
    assert max(counts.values()) - min(counts.values()) <= 1


def test_round_robin_start_offset() -> None:
    rr = RoundRobinPartitioner(start=2)
    assert [rr(parts(4)).id for _ in range(4)] == [2, 3, 0, 1]


def test_round_robin_threads_hand_out_each_position_once() -> None:
    rr = RoundRobinPartitioner()
    ps = parts(8)
    results: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        mine = [rr(ps).id for _ in range(2000)]
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    counts = Counter(results)
    assert all(c == 1000 for c in counts.values()), counts


# --- sticky --------------------------------------------------------------------------------


def test_default_partitioner_is_sticky() -> None:
    assert DefaultPartitioner is StickyPartitioner
    assert isinstance(DefaultPartitioner(), BasePartitioner)


def test_sticky_sticks_until_new_batch() -> None:
    sp = StickyPartitioner(rng=random.Random(3))
    ps = parts(6)
    first = sp(ps, None)
    assert all(sp(ps, None) is first for _ in range(100))
    assert sp.current(ps) == first.id

    new_id = sp.on_new_batch(ps, first.id)
    assert new_id != first.id
    second = sp(ps, None)
    assert second.id == new_id
    assert all(sp(ps, None) is second for _ in range(100))


def test_sticky_switch_always_differs_and_covers_all() -> None:
    sp = StickyPartitioner(rng=random.Random(5))
    ps = parts(4)
    prev = sp(ps, None).id
    seen = {prev}
    for _ in range(200):
        nxt = sp.on_new_batch(ps, prev)
        assert nxt != prev
        assert sp(ps, None).id == nxt
        seen.add(nxt)
        prev = nxt
    assert seen == {0, 1, 2, 3}


def test_sticky_single_partition() -> None:
    sp = StickyPartitioner()
    ps = parts(1)
    assert sp(ps, None).id == 0
    assert sp.on_new_batch(ps, 0) == 0
    assert sp(ps, None).id == 0


def test_sticky_stale_previous_does_not_switch_twice() -> None:
    # Two threads finishing the same batch: only the first moves the sticky partition.
    sp = StickyPartitioner(rng=random.Random(9))
    ps = parts(5)
    old = sp(ps, None).id
    moved = sp.on_new_batch(ps, old)
    assert sp.on_new_batch(ps, old) == moved
    assert sp(ps, None).id == moved


def test_sticky_new_batch_without_previous_always_moves() -> None:
    sp = StickyPartitioner(rng=random.Random(1))
    ps = parts(3)
    old = sp(ps, None).id
    assert sp.on_new_batch(ps) != old


def test_sticky_candidates_limit_the_choice() -> None:
    sp = StickyPartitioner(rng=random.Random(2))
    ps = parts(6)
    old = sp(ps, None).id
    available = [p for p in ps if p.id in (4, 5) and p.id != old] or [ps[4]]
    new = sp.on_new_batch(available, old)
    assert new in {p.id for p in available}
    assert sp(ps, None).id == new


def test_sticky_partition_disappearing_triggers_a_new_choice() -> None:
    sp = StickyPartitioner(rng=random.Random(4))
    sp.on_new_batch(parts(10))
    current = sp.current(parts(10))
    assert current is not None
    fewer = [p for p in parts(10) if p.id != current]
    chosen = sp(fewer, None)
    assert chosen in fewer
    assert sp(fewer, None) is chosen


def test_sticky_is_per_topic() -> None:
    sp = StickyPartitioner(rng=random.Random(11))
    a, b = parts(3, "a"), parts(50, "b")
    pa, pb = sp(a, None), sp(b, None)
    for _ in range(50):
        assert sp(a, None) is pa
        assert sp(b, None) is pb
    sp.on_new_batch(b, pb.id)
    assert sp(a, None) is pa


def test_sticky_state_is_bounded() -> None:
    sp = StickyPartitioner(max_topics=3)
    for i in range(10):
        sp(parts(2, f"topic-{i}"), None)
    assert len(sp._sticky) == 3
    # The most recent topics are the ones kept.
    assert sp.current(parts(2, "topic-9")) is not None
    assert sp.current(parts(2, "topic-0")) is None


def test_sticky_without_topic_attribute_uses_one_slot() -> None:
    @dataclass(frozen=True)
    class Bare:
        id: int

    sp = StickyPartitioner()
    ps = [Bare(i) for i in range(4)]
    first = sp(ps, None)
    assert all(sp(ps, None) is first for _ in range(20))


def test_sticky_spreads_over_batches() -> None:
    sp = StickyPartitioner(rng=random.Random(8))
    ps = parts(4)
    per_partition: Counter[int] = Counter()
    for _ in range(2000):
        p = sp(ps, None)
        per_partition[p.id] += 10
        for _ in range(9):
            assert sp(ps, None) is p
        sp.on_new_batch(ps, p.id)
    assert all(c > 3000 for c in per_partition.values()), per_partition


# --- callables -----------------------------------------------------------------------------


def first_partition(partitions: Sequence[Part], key: bytes | None) -> Part:
    return partitions[0]


@pytest.mark.parametrize(
    "partitioner",
    [
        first_partition,
        lambda partitions, key: partitions[-1],
        random_partitioner,
        hashing_partitioner,
        RoundRobinPartitioner(),
        StickyPartitioner(),
        DefaultPartitioner(),
    ],
)
def test_any_callable_is_a_partitioner(partitioner: Partitioner[Part]) -> None:
    # The producer calls positionally with (partitions, key); anything returning an
    # element of partitions qualifies, BasePartitioner subclass or not.
    ps = parts(3)
    for key in (None, b"key"):
        assert partitioner(ps, key) in ps


def test_custom_base_partitioner_subclass() -> None:
    class Last(BasePartitioner):
        def __call__(self, partitions: Sequence[Part], key: bytes | None = None) -> Part:  # type: ignore[override]
            return partitions[-1]

    assert Last()(parts(3)).id == 2
    with pytest.raises(TypeError):
        BasePartitioner()  # type: ignore[abstract]


def test_pure_fallback_without_the_extension() -> None:
    # A fresh interpreter where importing murmurhash2 fails, as on a plain `pip install grete`.
    code = """
import sys
sys.modules["murmurhash2"] = None
from grete import _murmur2
from grete.partitioners import hashing_partitioner
assert _murmur2.IMPLEMENTATION == "python", _murmur2.IMPLEMENTATION
assert _murmur2.murmur2_c is None
for key, expected in _murmur2.KAFKA_VECTORS.items():
    assert _murmur2.murmur2(key) == expected
    assert _murmur2.positive_murmur2(key) == expected & 0x7FFFFFFF

class P:
    def __init__(self, i):
        self.id = i

ps = [P(i) for i in range(7)][::-1]
assert hashing_partitioner(ps, b"foobar").id == (-790332482 & 0x7FFFFFFF) % 7
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def _java_partition(key: bytes, count: int) -> int:
    return (murmur2_pure(key) & 0x7FFFFFFF) % count


@pytest.mark.parametrize("count", [1, 2, 3, 5, 6, 7, 12, 100, 127, 128, 255, 256])
@pytest.mark.parametrize("length", [0, 1, 3, 4, 7, 16, 33])
def test_lanes_partition_ids_match_the_java_partitioner(count: int, length: int) -> None:
    rnd = random.Random(count * 100 + length)
    keys = [rnd.randbytes(length) for _ in range(300)]
    ids = _murmur2.murmur2_partition_ids(keys, count)
    assert ids == bytes(_java_partition(k, count) for k in keys)
    # The caller's word for the length (a placed stage measured its keys).
    assert _murmur2.murmur2_partition_ids(keys, count, length) == ids


@pytest.mark.parametrize("count", [1, 3, 7, 128, 256])
def test_lanes_partition_ids_of_mixed_lengths_match_the_java_partitioner(count: int) -> None:
    # "user-9", "user-10", ...: common lengths in lanes, a rare one key by key,
    # each id back in its key's place.
    keys = [b"user-%d" % i for i in range(2000)] + [b"", b"x" * 70, b"user-1"]
    random.Random(count).shuffle(keys)
    ids = _murmur2.murmur2_partition_ids(keys, count)
    assert ids == bytes(_java_partition(k, count) for k in keys)


@settings(max_examples=effort(200, 30))
@given(st.lists(st.binary(max_size=6), max_size=300), st.integers(min_value=1, max_value=256))
def test_lanes_partition_ids_of_any_keys(keys: list[bytes], count: int) -> None:
    ids = _murmur2.murmur2_partition_ids(keys, count)
    if ids is not None:
        assert ids == bytes(_java_partition(k, count) for k in keys)


def test_lanes_modulo_at_the_edges_of_every_partition_count() -> None:
    # Division by multiplication must hold for every 31-bit value: check the values
    # where it would break first (0, the top, and around each multiple of the count),
    # with the sign bit set too (it is masked away first, as toPositive does).
    for count in range(1, 257):
        top = 0x7FFFFFFF
        near = [top - top % count + d for d in (-1, 0)] + [count - 1, count, count + 1]
        values = [0, 1, top, top - 1, *(v for v in near if 0 <= v <= top)]
        values += [v | 0x80000000 for v in values]
        n = len(values)
        lanes = int.from_bytes(b"".join(v.to_bytes(8, "little") for v in values), "little")
        assert _murmur2._lanes_modulo(lanes, n, count) == bytes(
            (v & 0x7FFFFFFF) % count for v in values
        ), count


@settings(max_examples=effort(200, 30))
@given(st.integers(min_value=0, max_value=0xFFFFFFFF), st.integers(min_value=1, max_value=256))
def test_lanes_modulo_of_any_hash(value: int, count: int) -> None:
    lanes = int.from_bytes(value.to_bytes(8, "little") * 40, "little")
    assert _murmur2._lanes_modulo(lanes, 40, count) == bytes([(value & 0x7FFFFFFF) % count]) * 40


@pytest.mark.parametrize("n", [31, 32, 33])
def test_lanes_partition_ids_at_the_lanes_threshold(n: int) -> None:
    keys = [b"key-%04d" % i for i in range(n)]
    ids = _murmur2.murmur2_partition_ids(keys, 6)
    if n < 32:
        assert ids is None  # key by key: as fast below the threshold
    else:
        assert ids == bytes(_java_partition(k, 6) for k in keys)


def test_lanes_partition_ids_decline_what_they_cannot_do() -> None:
    same = [b"k%03d" % i for i in range(100)]
    assert _murmur2.murmur2_partition_ids(same[:10], 3) is None  # too few for lanes
    assert _murmur2.murmur2_partition_ids(same, 257) is None  # ids past one byte
    mixed = [b"k" * n for n in range(40)]  # 40 lengths, none common enough
    assert _murmur2.murmur2_partition_ids(mixed, 3) is None
    with pytest.raises(TypeError):
        _murmur2.murmur2_partition_ids(["text"] * 40, 3)  # type: ignore[list-item]
