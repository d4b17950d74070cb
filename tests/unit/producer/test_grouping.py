"""A stage's timestamps as runs (``grouping.time_runs``) and each
partition's share of them (``grouping.partition_time_runs``)."""

from __future__ import annotations

import random
from itertools import groupby

import pytest

from grete.producer.grouping import TIME_RUNS_MAX, partition_time_runs, time_runs


@pytest.mark.parametrize("distinct", [1, 2, 5, TIME_RUNS_MAX])
@pytest.mark.parametrize("n", [1, 7, 1024])
def test_non_decreasing_timestamps_are_runs_covering_them_in_order(n: int, distinct: int) -> None:
    rnd = random.Random(f"{n}-{distinct}")
    stamps = sorted(1_700_000_000_000 + rnd.randrange(distinct) * 3 for _ in range(n))
    runs = time_runs(stamps)
    assert runs is not None
    expected, start = [], 0
    for value, group in groupby(stamps):
        end = start + len(list(group))
        expected.append((value, start, end))
        start = end
    assert runs == expected


@pytest.mark.parametrize(
    "stamps",
    [
        [5, 5, 4],  # the clock set back
        [5, 6, 5, 6],  # back, then forward again
        [5, 6, 7, 5],  # back to an earlier value, at the end
        [1, 1, 2, 1, 2, 2],  # a bisect over unsorted items finds a wrong end
        list(range(TIME_RUNS_MAX + 1)),  # too many changes: grouped as any column
    ],
)
def test_timestamps_out_of_order_or_too_varied_are_not_runs(stamps: list[int]) -> None:
    assert time_runs(stamps) is None


def test_a_partitions_share_of_the_runs_is_its_records_timestamps() -> None:
    rnd = random.Random(3)
    n = 2000
    stamps = sorted(1000 + rnd.randrange(6) for _ in range(n))
    ids = bytes(rnd.randrange(4) for _ in range(n))
    runs = time_runs(stamps)
    assert runs is not None
    for pid in range(5):  # partition 4 has no records
        mine, column = partition_time_runs(runs, ids, pid)
        assert column == [t for t, p in zip(stamps, ids, strict=True) if p == pid]
        assert mine == [(value, len(list(group))) for value, group in groupby(column)]
