"""ProducerBatch bookkeeping that the producers' buffer bounds rely on."""

from __future__ import annotations

import pytest

from grete.producer.batch import ProducerBatch, move_watchers


@pytest.mark.parametrize("n", [2, 3, 7, 10])
def test_split_halves_add_up_to_the_whole(n: int) -> None:
    # A producer counts each record's size against max_buffer_bytes and
    # releases batch.size when the batch is done: a split must not lose bytes
    # (the bound would creep) nor invent them.
    batch = ProducerBatch("t", 0, 0.0)
    for i in range(n):
        batch.append(b"k" if i % 2 else None, b"v" * i, None, 1000 + i, i, 21 + i + i % 2)
    first, second = batch.split()
    assert first.size + second.size == batch.size
    assert first.values + second.values == batch.values
    assert list(first.handles) + list(second.handles) == list(range(n))
    assert first.order < second.order


class _Watcher:
    def __init__(self, batch: ProducerBatch, index: int) -> None:
        self._batch, self._index = batch, index


class _AppendInterrupted(list[object]):
    """A watcher list whose append of ``victim`` raises KeyboardInterrupt
    (once, unappended)."""

    def __init__(self, victim: object) -> None:
        super().__init__()
        self.victim: object | None = victim

    def append(self, item: object) -> None:
        if item is self.victim:
            self.victim = None
            raise KeyboardInterrupt
        super().append(item)


@pytest.mark.parametrize("cut", ["in the forward", "in the append"])
@pytest.mark.parametrize("at", [0, 3, 9])
def test_watchers_moved_all_when_the_move_is_cut_short(cut: str, at: int) -> None:
    """A KeyboardInterrupt while a relocated batch's watchers move (a stage
    placed by the thread calling produce()) must not lose the rest: their
    callbacks and delivery reports would never come."""
    old = ProducerBatch("t", -1, 0.0)
    even, odd = ProducerBatch("t", 0, 0.0), ProducerBatch("t", 1, 0.0)
    watchers = [_Watcher(old, i) for i in range(10)]
    old.watchers = list(watchers)
    calls = [0]

    def forward(i: int) -> tuple[ProducerBatch, int]:
        calls[0] += 1
        if cut == "in the forward" and calls[0] == at + 1:
            raise KeyboardInterrupt
        return (odd if i % 2 else even), i // 2

    if cut == "in the append":
        # The watcher ``at`` goes to a batch whose list raises on appending it.
        target = odd if at % 2 else even
        target.watchers = _AppendInterrupted(watchers[at])
    with pytest.raises(KeyboardInterrupt):
        move_watchers(old, forward)
    left: object = old.watchers  # (typed, not narrowed by the assignment above)
    assert old.forward is forward and left is None
    for w in watchers:
        assert w._batch is (odd if watchers.index(w) % 2 else even)
        assert w._index == watchers.index(w) // 2
    assert [w._index for w in even.watchers or []] == [0, 1, 2, 3, 4]
    assert [w._index for w in odd.watchers or []] == [0, 1, 2, 3, 4]
