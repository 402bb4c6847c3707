"""The event-loop lag probe's buckets and percentiles (api/loop_lag.py)."""

from __future__ import annotations

from api.loop_lag import BOUNDS_MS, LoopLagProbe, percentile_ms


def test_each_wake_up_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() -> None:
    probe = LoopLagProbe()
    for late_ms in (0.0, 0.5, 0.7, 3.0, 1000.0, 5000.0):
        probe.record(late_ms)
    counts = probe.snapshot().counts
    assert len(counts) == len(BOUNDS_MS) + 1
    assert counts[0] == 2  # 0 and 0.5 (a bound is inclusive)
    assert counts[BOUNDS_MS.index(1.0)] == 1
    assert counts[BOUNDS_MS.index(5.0)] == 1
    assert counts[BOUNDS_MS.index(1000.0)] == 1
    assert counts[-1] == 1  # above the last bound
    assert probe.snapshot().max_ms == 5000.0


def test_percentiles_are_of_the_wake_ups_between_two_snapshots() -> None:
    probe = LoopLagProbe()
    for _ in range(50):
        probe.record(100.0)  # before: must not count
    before = probe.snapshot()
    for _ in range(98):
        probe.record(0.2)
    probe.record(7.0)
    probe.record(300.0)
    after = probe.snapshot()
    assert percentile_ms(before, after, 50) == 0.5
    assert percentile_ms(before, after, 99) == 10.0
    assert percentile_ms(before, after, 100) == 500.0
    assert percentile_ms(after, after, 99) is None
