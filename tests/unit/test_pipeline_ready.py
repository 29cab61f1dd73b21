"""The commit thread's hand-off (``gateway.pipeline._Ready``): everything validated
since the last commit is taken as one batch, up to the batch size."""

from __future__ import annotations

import threading

from gateway.bridge import InboundMessage
from gateway.pipeline import _Ready, _Validated
from ingest.batch import Batch


def _item(n: int) -> _Validated:
    messages = [InboundMessage(f"t/{i}", b"{}", 1, i, 0.0, 1) for i in range(n)]
    return _Validated(messages, Batch(), 0)


def test_everything_waiting_is_taken_at_once() -> None:
    ready = _Ready(limit=100)
    items = [_item(3), _item(1), _item(5)]
    for item in items:
        assert ready.put(item, timeout=0)
    assert ready.messages == 9
    assert ready.take(timeout=0) == items
    assert ready.messages == 0
    assert ready.take(timeout=0) == []


def test_a_take_stops_at_the_batch_size_but_never_splits_a_batch() -> None:
    ready = _Ready(limit=10)
    first, second, third = _item(6), _item(3), _item(4)
    for item in (first, second, third):
        ready.put(item, timeout=0)
    assert ready.take(timeout=0) == [first, second]  # 9; 13 would pass the limit
    assert ready.take(timeout=0) == [third]
    big = _item(25)  # a batch over the limit alone is still taken whole
    ready.put(big, timeout=0)
    assert ready.take(timeout=0) == [big]


def test_put_waits_while_full_and_the_end_comes_after_the_rest() -> None:
    ready = _Ready(limit=4)
    assert ready.put(_item(4), timeout=0)
    assert not ready.put(_item(1), timeout=0)  # full: intake waits (memory stays bounded)
    late = _item(1)
    taken: list[object] = []
    taker = threading.Thread(target=lambda: taken.extend(ready.take(timeout=5)))
    putter_done = threading.Event()

    def putter() -> None:
        assert ready.put(late, timeout=5)  # let in once the commit thread took the rest
        putter_done.set()

    t = threading.Thread(target=putter)
    t.start()
    taker.start()
    taker.join(10)
    t.join(10)
    assert putter_done.is_set()
    assert len(taken) == 1
    more = _item(3)
    assert ready.put(more, timeout=0)
    assert not ready.put(_item(1), timeout=0)  # full again
    assert ready.put(None, timeout=0)  # the end is taken even when full
    assert ready.take(timeout=0) == [late, more]  # what came before the end first
    assert ready.take(timeout=0) == [None]
