"""Record-batch encoding throughput: grete vs kafka-python vs aiokafka (C builder).

Run: .venv/bin/python benchmarks/bench_encode.py [--repeats N]

Prints a Markdown table of records/s (best of N, batches of 1,000 records). Every
client encodes the same records from prepared lists, so only batch building is
measured: kafka-python and aiokafka append record by record as their producers do.
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
import time
from collections.abc import Callable, Sequence

from grete.protocol.compression import CompressionType
from grete.protocol.crc32c import HAVE_C_CRC32C
from grete.protocol.records import encode_batch

N = 1000
TS = 1_700_000_000_000
WORDS = (
    b"alpha beta gamma delta epsilon kafka broker topic partition leader replica "
    b"producer consumer offset batch record header key value stream event order "
    b"user click session payment invoice shipment region latency error status"
).split()

Headers = list[tuple[str, bytes | None]]
Case = tuple[str, list[bytes | None], list[bytes | None] | None, list[Headers | None] | None, int]


def words(rnd: random.Random, size: int) -> bytes:
    out = b" ".join(rnd.choice(WORDS) for _ in range(size // 4 + 1))
    return out[:size]


def make_cases() -> list[Case]:
    rnd = random.Random(42)
    v100: list[bytes | None] = [words(rnd, 100) for _ in range(N)]
    v1k: list[bytes | None] = [words(rnd, 1000) for _ in range(N)]
    keys: list[bytes | None] = [b"user-%011d" % rnd.randrange(10**11) for _ in range(N)]
    hdrs: list[Headers | None] = [
        [("trace-id", words(rnd, 16)), ("source", b"bench")] for _ in range(N)
    ]
    return [
        ("100 B unkeyed", v100, None, None, 0),
        ("100 B keyed (16 B keys)", v100, keys, None, 0),
        ("100 B keyed + 2 headers", v100, keys, hdrs, 0),
        ("1 KB unkeyed", v1k, None, None, 0),
        ("100 B unkeyed, lz4", v100, None, None, 3),
        ("100 B unkeyed, zstd", v100, None, None, 4),
    ]


def best_rate(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm caches (grete's per-length tables, lazy imports)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return N / best


def grete_fn(case: Case) -> Callable[[], object]:
    _, values, keys, headers, codec = case
    compression = CompressionType(codec)
    return lambda: encode_batch(values, keys, headers, base_timestamp=TS, compression=compression)


def builder_fn(builder_cls: type, case: Case) -> Callable[[], object]:
    _, values, keys, headers, codec = case
    key_col: Sequence[bytes | None] = keys if keys is not None else [None] * N
    hdr_col: Sequence[Headers | None] = headers if headers is not None else [[]] * N

    def run() -> object:
        builder = builder_cls(
            magic=2,
            compression_type=codec,
            is_transactional=0,
            producer_id=-1,
            producer_epoch=-1,
            base_sequence=-1,
            batch_size=1 << 30,
        )
        append = builder.append
        for i in range(N):
            append(i, timestamp=TS, key=key_col[i], value=values[i], headers=hdr_col[i])
        return builder.build()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    contenders: list[tuple[str, Callable[[Case], Callable[[], object]]]] = [("grete", grete_fn)]
    try:
        from kafka.record.default_records import DefaultRecordBatchBuilder as KpBuilder

        contenders.append(("kafka-python", lambda c: builder_fn(KpBuilder, c)))
    except ImportError:
        pass
    try:
        from aiokafka.record.default_records import DefaultRecordBatchBuilder as AioBuilder

        label = "aiokafka (C)" if "_crecords" in AioBuilder.__module__ else "aiokafka (py)"
        contenders.append((label, lambda c: builder_fn(AioBuilder, c)))
    except ImportError:
        pass

    print(
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"C CRC-32C: {HAVE_C_CRC32C}, best of {args.repeats}, {N} records/batch\n"
    )
    names = [name for name, _ in contenders]
    print("| case | " + " | ".join(f"{n} rec/s" for n in names) + " | grete vs others |")
    print("|---|" + "---:|" * len(names) + "---|")
    for case in make_cases():
        rates = []
        for _, make in contenders:
            try:
                rates.append(best_rate(make(case), args.repeats))
            except Exception as exc:  # a codec missing in another client
                print(f"<!-- {case[0]}: {exc!r} -->", file=sys.stderr)
                rates.append(float("nan"))
        ratios = ", ".join(
            f"{rates[0] / r:.1f}x {n}" for n, r in zip(names[1:], rates[1:], strict=True) if r == r
        )
        cells = " | ".join(f"{r:,.0f}" if r == r else "n/a" for r in rates)
        print(f"| {case[0]} | {cells} | {ratios} |")


if __name__ == "__main__":
    main()
