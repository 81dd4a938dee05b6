"""The interleaved timing protocol: like models time alike, a slower one is ranked slower, and
the rows carry their spread."""

from __future__ import annotations

import copy
import time

import pytest
import torch

from detkd.bench.measure import RoundTimes, interleaved_latency, quartiles, rotation, round_ratios
from detkd.bench.report import NOISY, format_table, row_dict
from detkd.bench.runner import BenchTarget, Entry, bench_entries, build_bench_model, sized


def test_rounds_rotate_the_order() -> None:
    assert [rotation(3, r) for r in range(4)] == [[0, 1, 2], [1, 2, 0], [2, 0, 1], [0, 1, 2]]


def test_ratios_and_spread_on_known_times() -> None:
    teacher = RoundTimes([10.0, 20.0, 12.0, 30.0], [10.0, 20.0, 12.0, 30.0, 11.0])
    student = RoundTimes([5.0, 10.0, 4.0, 15.0], [5.0, 10.0, 4.0, 15.0])
    # per round the student is 2x, 2x, 3x, 2x faster: the drift (10 -> 30 ms) cancels
    speedup, iqr = round_ratios(teacher, student)
    assert speedup == 2.0 and iqr == pytest.approx(0.25)
    median, spread, p90 = teacher.latency()
    assert median == 16.0 and spread == pytest.approx(quartiles(teacher.rounds)[2] - quartiles(teacher.rounds)[0])
    assert p90 >= median


def test_two_copies_of_one_model_time_alike(tiny) -> None:
    model, _ = build_bench_model(sized(tiny(size=64), None), 10)
    twin = copy.deepcopy(model)
    times = interleaved_latency([(model, True), (twin, True)], torch.device("cpu"), rounds=9, runs=3, warmup=2,
                                input_hw=(96, 128))
    ratio, _ = round_ratios(times[0], times[1])
    assert ratio == pytest.approx(1.0, rel=0.10)


class Slowed(torch.nn.Module):
    """A model with an extra sleep in its forward."""

    def __init__(self, model: torch.nn.Module, seconds: float) -> None:
        super().__init__()
        self.model, self.seconds = model, seconds

    def forward(self, images):
        time.sleep(self.seconds)
        return self.model(images)


def test_a_deliberately_slowed_model_is_ranked_slower(tiny) -> None:
    model, _ = build_bench_model(sized(tiny(size=64), None), 10)
    times = interleaved_latency([(model, False), (Slowed(copy.deepcopy(model), 0.02), False)], torch.device("cpu"),
                                rounds=5, runs=2, warmup=1, input_hw=(96, 128))
    speedup, _ = round_ratios(times[0], times[1])
    assert times[1].latency()[0] > times[0].latency()[0] + 15 and speedup < 0.9


def test_rows_carry_the_spread_and_the_noisy_flag(tiny, fast) -> None:
    target = BenchTarget("tiny", "", tiny(size=64), 10)
    other = BenchTarget("small", "", tiny("small", size=64), 10)
    report = bench_entries([Entry(target, None, 0), Entry(other, None, 0)], fast)
    first, second = report.rows
    assert first.speedup == 1.0 and first.speedup_iqr == 0.0 and first.rounds == fast.rounds
    assert second.latency_ms > 0 and second.latency_ms_iqr >= 0 and second.speedup_iqr >= 0
    d = row_dict(second)
    assert {"latency_ms", "latency_ms_iqr", "speedup", "speedup_iqr", "noisy"} <= set(d)
    second.latency_ms_iqr = 0.5 * second.latency_ms  # a spread of 50 %: flagged
    assert second.noisy and NOISY in format_table(report.rows)
    second.latency_ms_iqr, second.speedup_iqr = 0.0, 0.0
    first.latency_ms_iqr = 0.0
    assert NOISY not in format_table(report.rows)
