"""The interleaved timing protocol: like models time alike, a slower one is ranked slower, and
the rows carry their spread."""

from __future__ import annotations

import copy

import pytest
import torch

from detkd.bench import measure
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


class DriftingMachine:
    """A fake clock for the timing protocol: every forward costs its model's ``work`` in
    milliseconds times the machine's slowness, which grows by ``drift`` per forward (another job
    starting, the clock throttling), so that timing one model after the other would be biased."""

    def __init__(self, drift: float) -> None:
        self.now, self.forwards, self.drift = 0.0, 0, drift

    def perf_counter(self) -> float:
        return self.now

    def run(self, work_ms: float) -> None:
        self.now += work_ms / 1000.0 * (1.0 + self.drift * self.forwards)
        self.forwards += 1


class Work(torch.nn.Module):
    """A model whose forward costs ``work_ms`` on a :class:`DriftingMachine`."""

    def __init__(self, machine: DriftingMachine, work_ms: float) -> None:
        super().__init__()
        self.machine, self.work_ms = machine, work_ms

    def forward(self, images):
        self.machine.run(self.work_ms)
        return images


@pytest.fixture
def machine(monkeypatch: pytest.MonkeyPatch) -> DriftingMachine:
    fake = DriftingMachine(drift=0.02)  # 3x slower after 100 forwards
    monkeypatch.setattr(measure, "time", fake)
    return fake


def test_two_copies_of_one_model_time_alike_on_a_drifting_machine(machine) -> None:
    times = interleaved_latency([(Work(machine, 10.0), False), (Work(machine, 10.0), False)], torch.device("cpu"),
                                rounds=9, runs=3, warmup=2, input_hw=(32, 32))
    assert times[0].rounds[-1] > 1.5 * times[0].rounds[0]  # the machine did slow down
    ratio, spread = round_ratios(times[0], times[1])
    assert ratio == pytest.approx(1.0, abs=0.03) and spread < 0.05


def test_a_model_with_twice_the_work_is_twice_as_slow_on_a_drifting_machine(machine) -> None:
    times = interleaved_latency([(Work(machine, 20.0), False), (Work(machine, 10.0), False)], torch.device("cpu"),
                                rounds=5, runs=2, warmup=1, input_hw=(32, 32))
    speedup, _ = round_ratios(times[0], times[1])
    assert speedup == pytest.approx(2.0, rel=0.03)
    assert len(times[0].rounds) == 5 and len(times[1].forwards) == 10  # A B B A, 1 forward per visit


def test_real_models_give_every_round_and_forward(tiny) -> None:
    model, _ = build_bench_model(sized(tiny(size=64), None), 10)
    times = interleaved_latency([(model, True), (copy.deepcopy(model), True)], torch.device("cpu"), rounds=3, runs=2,
                                warmup=1, input_hw=(96, 128))
    assert [len(t.rounds) for t in times] == [3, 3] and [len(t.forwards) for t in times] == [6, 6]  # 1 + 1 per round
    assert all(ms > 0 for t in times for ms in t.forwards)


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
