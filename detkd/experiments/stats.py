"""The arithmetic of a distillation result: gain over the baseline, share of the gap closed, mean
and spread over seeds (and how long it took, as progress lines print it).

With ``t`` the teacher's score, ``b`` the baseline student's (trained without the teacher) and
``s`` the distilled student's, the *gain* is ``s - b`` and the *share of the teacher-student gap
closed* is ``(s - b) / (t - b)``: 0 when distillation changed nothing, 1 when the student
reached its teacher, above 1 when it overtook it and below 0 when it got worse. It is undefined
(None) when the teacher is not better than the baseline (``t <= b``): there is no gap to close.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def gain(student: float | None, baseline: float | None) -> float | None:
    """``student - baseline``, None when either is missing."""
    if student is None or baseline is None:
        return None
    return student - baseline


def gap_closed(student: float | None, baseline: float | None, teacher: float | None) -> float | None:
    """``(student - baseline) / (teacher - baseline)``; None without a positive gap or a score."""
    if student is None or baseline is None or teacher is None or teacher <= baseline:
        return None
    return (student - baseline) / (teacher - baseline)


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of the values given; std is 0.0 for one value,
    both None for none. Missing values (None) are left out."""
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return None, None
    mean = sum(kept) / len(kept)
    if len(kept) == 1:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in kept) / (len(kept) - 1))


def format_seconds(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``: the durations of the progress lines."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
