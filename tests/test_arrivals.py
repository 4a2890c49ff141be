"""The open model's arrival schedule (harness/load/arrivals.py): pure, so every property is exact."""

from __future__ import annotations

import itertools

import pytest

from harness.load.arrivals import MAX_ARRIVALS, RateShape, for_slice, schedule


def count_in(offsets: list[float], a: float, b: float) -> int:
    return sum(1 for t in offsets if a <= t < b)


def test_constant_rate_spaces_arrivals_evenly() -> None:
    offsets = schedule(RateShape("constant", rate=150, duration_s=10))
    assert len(offsets) == 1500
    assert offsets == sorted(offsets) and offsets[0] >= 0 and offsets[-1] < 10
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(offsets)}
    assert gaps == {round(1 / 150, 9)}
    # Any window holds rate * width arrivals, give or take one: a fault window's demand is exact.
    for a in (0.0, 2.37, 6.0):
        assert abs(count_in(offsets, a, a + 4) - 600) <= 1


def test_ramp_rises_linearly_then_holds() -> None:
    shape = RateShape("ramp", rate=200, base_rate=20, duration_s=20, ramp_s=10)
    offsets = schedule(shape)
    assert len(offsets) == round(shape.expected()) == round(10 * (20 + 200) / 2 + 10 * 200)
    first, mid, held = count_in(offsets, 0, 1), count_in(offsets, 5, 6), count_in(offsets, 15, 16)
    assert abs(first - 29) <= 1  # 20/s rising by 18/s each second: about 29 in the first second
    assert abs(mid - 119) <= 1
    assert abs(held - 200) <= 1
    assert shape.rate_at(0) == 20 and shape.rate_at(5) == pytest.approx(110) and shape.rate_at(12) == 200


def test_spike_is_the_peak_rate_for_its_window_only() -> None:
    offsets = schedule(RateShape("spike", rate=300, base_rate=30, duration_s=30, spike_at_s=10, spike_s=5))
    assert abs(count_in(offsets, 0, 10) - 300) <= 1
    assert abs(count_in(offsets, 10, 15) - 1500) <= 1
    assert abs(count_in(offsets, 15, 30) - 450) <= 1
    assert not count_in(offsets, 30, 99)


def test_a_spike_on_no_base_rate_has_arrivals_only_inside_it() -> None:
    offsets = schedule(RateShape("spike", rate=100, base_rate=0, duration_s=9, spike_at_s=3, spike_s=3))
    assert len(offsets) == 300 and min(offsets) >= 3 and max(offsets) < 6


def test_poisson_is_deterministic_from_the_seed_and_keeps_the_rate() -> None:
    shape = RateShape("constant", rate=100, duration_s=60)
    a, b, c = schedule(shape, "poisson", seed=7), schedule(shape, "poisson", seed=7), schedule(shape, "poisson", seed=8)
    assert a == b and a != c
    assert 5400 < len(a) < 6600  # 6,000 expected; 3 standard deviations is about 230
    gaps = [y - x for x, y in itertools.pairwise(a)]
    assert min(gaps) < 0.001 < 0.05 < max(gaps)  # bursts and lulls, unlike even spacing


@pytest.mark.parametrize("count", [1, 2, 3, 8])
def test_slices_are_disjoint_and_cover_the_schedule(count: int) -> None:
    offsets = schedule(RateShape("constant", rate=97, duration_s=5))
    slices = [for_slice(offsets, i, count) for i in range(count)]
    numbers = sorted(k for s in slices for k, _ in s)
    assert numbers == list(range(len(offsets)))
    assert all(offsets[k] == t for s in slices for k, t in s)
    sizes = [len(s) for s in slices]
    assert max(sizes) - min(sizes) <= 1


def test_bad_shapes_name_the_field() -> None:
    with pytest.raises(ValueError, match="rate 0: must be a positive number"):
        RateShape("constant", rate=0, duration_s=10)
    with pytest.raises(ValueError, match="duration_s -1"):
        RateShape("constant", rate=10, duration_s=-1)
    with pytest.raises(ValueError, match="at most"):
        RateShape("constant", rate=5000, duration_s=MAX_ARRIVALS)
    with pytest.raises(ValueError, match="slice 2 of 2"):
        for_slice([0.1], 2, 2)
