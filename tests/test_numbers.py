"""A worker's sequence numbers at the sink: what was received, dropped, lost or forged."""

from __future__ import annotations

from pytest_memstream.collector.numbers import MAX_JUMP, MAX_RUNS, Received


def test_frames_in_order_make_one_run_and_lose_nothing() -> None:
    numbers = Received()
    for first in range(0, 100, 10):
        assert numbers.claim(first, 10, 0) == [(first, first + 10)]
    assert len(numbers.runs) == 1
    assert numbers.lost() == 0
    assert numbers.has(99) and not numbers.has(100)
    assert numbers.received_upto(99) == 100


def test_a_gap_the_worker_dropped_is_not_lost_one_it_did_not_is() -> None:
    numbers = Received()
    numbers.claim(0, 10, 0)
    numbers.claim(30, 10, 20)  # its queue refused 10..29
    assert numbers.lost() == 0
    assert numbers.dropped() == 20
    numbers.claim(50, 10, 20)  # 40..49 vanished on the way
    assert numbers.lost() == 10


def test_numbers_received_before_are_replays_and_the_rest_is_taken() -> None:
    numbers = Received()
    numbers.claim(0, 10, 0)
    assert numbers.claim(0, 1, 0) == "replay"
    assert numbers.claim(0, 10, 0) == "replay"
    assert numbers.claim(5, 10, 0) == [(10, 15)]
    assert numbers.received_upto(100) == 15
    assert len(numbers.runs) == 1


def test_a_forged_far_number_is_refused_and_a_near_one_takes_only_its_own() -> None:
    numbers = Received()
    assert numbers.claim(2**52, 1, 0) == "sequence"
    assert numbers.claim(MAX_JUMP + 1, 1, 0) == "sequence"
    assert numbers.claim(3, 1, 0) == [(3, 4)]  # forged, before the worker's first frame
    assert numbers.claim(1000, 3, 0) == [(1000, 1003)]  # and one far ahead of it
    assert numbers.claim(5, 1, 9) == "sequence"  # more drops than numbers before it
    # The worker's real stream goes on around them: never locked out.
    assert numbers.claim(0, 10, 0) == [(0, 3), (4, 10)]
    for first in range(10, 1000, 10):
        assert numbers.claim(first, 10, 0) == [(first, first + 10)]
    assert numbers.claim(1000, 10, 0) == [(1003, 1010)]
    assert numbers.runs == [[0, 1010, 0, 0, 1010]]  # one run again, every number once
    assert numbers.lost() == 0


def test_runs_stay_bounded_and_drop_explained_gaps_first() -> None:
    numbers = Received()
    first = 0
    for n in range(10 * MAX_RUNS):
        numbers.claim(first, 1, n)  # every other number dropped by the worker
        first += 2
    assert len(numbers.runs) <= MAX_RUNS
    assert numbers.lost() == 0
    assert numbers.claim(first + 4, 1, 10 * MAX_RUNS) == [(first + 4, first + 5)]
    assert numbers.lost() == 4  # 4 vanished on the way
