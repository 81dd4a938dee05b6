"""The arithmetic of a distillation result: gain, share of the gap closed, mean and spread."""

from __future__ import annotations

import statistics

import pytest

from detkd.experiments.stats import gain, gap_closed, mean_std


def test_gain_and_gap_closed_on_known_numbers() -> None:
    assert gain(0.70, 0.60) == pytest.approx(0.10)
    assert gap_closed(0.70, 0.60, 0.80) == pytest.approx(0.5)
    assert gap_closed(0.60, 0.60, 0.80) == 0.0  # distillation changed nothing
    assert gap_closed(0.80, 0.60, 0.80) == pytest.approx(1.0)  # reached the teacher
    assert gap_closed(0.90, 0.60, 0.80) == pytest.approx(1.5)  # overtook it
    assert gap_closed(0.50, 0.60, 0.80) == pytest.approx(-0.5)  # got worse


def test_no_gap_or_no_score_is_none() -> None:
    assert gap_closed(0.70, 0.60, 0.60) is None  # teacher == baseline: no gap
    assert gap_closed(0.70, 0.60, 0.50) is None  # teacher below the baseline
    assert gap_closed(0.604, 0.60, 0.602) is None  # a gap under one AP point: no share printed
    assert gap_closed(0.605, 0.60, 0.61) == pytest.approx(0.5)
    assert gap_closed(None, 0.60, 0.80) is None
    assert gap_closed(0.70, None, 0.80) is None
    assert gap_closed(0.70, 0.60, None) is None
    assert gain(None, 0.6) is None and gain(0.6, None) is None


def test_mean_std_matches_statistics() -> None:
    values = [0.61, 0.64, 0.58, 0.66]
    mean, std = mean_std(values)
    assert mean == pytest.approx(statistics.mean(values))
    assert std == pytest.approx(statistics.stdev(values))
    assert mean_std([0.61, None, 0.64]) == pytest.approx((statistics.mean([0.61, 0.64]), statistics.stdev([0.61, 0.64])))
    assert mean_std([0.7]) == (0.7, 0.0)
    assert mean_std([]) == (None, None)
    assert mean_std([None, None]) == (None, None)
