"""Speed of detectors (``detkd bench``): latency, throughput, memory, FLOPs and a stage profile.

- :func:`bench_configs`, :func:`bench_model` (``detkd.bench.runner``): build models from configs
  (untrained or from a checkpoint) and measure them into :class:`BenchRow` s;
- :func:`measure_speed` (``detkd.bench.measure``): latency (median, p90), img/s at batch 1 and 8,
  peak memory;
- :func:`count_flops` (``detkd.bench.flops``): FLOPs per forward (``FlopCounterMode``);
- :func:`hold_counts` (``detkd.bench.hold``): fixed proposal and detection counts for untrained
  models;
- :func:`profile_model` (``detkd.bench.profile``): time and FLOPs per stage of a forward;
- ``detkd.bench.report``: the table, CSV, JSON and the speed/accuracy plot.
"""

from detkd.bench.flops import count_flops, flops_with_breakdown
from detkd.bench.hold import hold_counts
from detkd.bench.measure import SpeedResult, measure_speed
from detkd.bench.profile import StageProfile, StageTime, format_profiles, profile_model
from detkd.bench.report import BenchRow, format_csv, format_json, format_table, plot_speed_accuracy, read_accuracy
from detkd.bench.runner import BenchOptions, BenchReport, bench_configs, bench_model, measure_model

__all__ = [
    "BenchOptions", "BenchReport", "BenchRow", "SpeedResult", "StageProfile", "StageTime", "bench_configs",
    "bench_model", "count_flops", "flops_with_breakdown", "format_csv", "format_json", "format_profiles",
    "format_table", "hold_counts", "measure_model", "measure_speed", "plot_speed_accuracy", "profile_model",
    "read_accuracy",
]
