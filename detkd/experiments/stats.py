"""The arithmetic of a distillation result: gain over the baseline, share of the gap closed, mean
and spread over seeds (and how long it took, as progress lines print it).

With ``t`` the teacher's score, ``b`` the baseline student's (trained without the teacher) and
``s`` the distilled student's, the *gain* is ``s - b`` and the *share of the teacher-student gap
closed* is ``(s - b) / (t - b)``: 0 when distillation changed nothing, 1 when the student
reached its teacher, above 1 when it overtook it and below 0 when it got worse. It is undefined
(None) when the teacher is not better than the baseline (``t <= b``): there is no gap to close.

A *paired* comparison (docs/METHOD.md section 7b) trains baseline and distilled student from the
same seed (the same initial weights and data order) and reports the mean of the per-seed
differences with a Student-t confidence interval (n - 1 degrees of freedom): the seed-to-seed
spread that both runs share cancels, which a difference of two unpaired means keeps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def gain(student: float | None, baseline: float | None) -> float | None:
    """``student - baseline``, None when either is missing."""
    if student is None or baseline is None:
        return None
    return student - baseline


MIN_GAP = 0.01  # 1 AP point: a share of a smaller gap (under one seed's noise) is no number to print


def gap_closed(student: float | None, baseline: float | None, teacher: float | None) -> float | None:
    """``(student - baseline) / (teacher - baseline)`` (scores in [0, 1]); None without a score or
    when the teacher is not at least :data:`MIN_GAP` above the baseline (e.g. a student that
    starts from the teacher's weights and already matches it: 0.4 / 0.04 is not "1000 %")."""
    if student is None or baseline is None or teacher is None or teacher - baseline < MIN_GAP:
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


def paired_differences(treated: dict[int, float | None], control: dict[int, float | None]) -> list[float]:
    """``treated[s] - control[s]`` for every seed ``s`` both have a value for, in seed order."""
    return [float(treated[s]) - float(control[s]) for s in sorted(set(treated) & set(control))
            if treated[s] is not None and control[s] is not None]


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float | None, float | None, float | None]:
    """``(mean, low, high)``: the mean and its two-sided Student-t interval at ``level``; the
    interval is None with fewer than two values, everything None with none."""
    n = len(values)
    if n == 0:
        return None, None, None
    mean, std = mean_std(values)
    if n < 2:
        return mean, None, None
    half = t_quantile(0.5 + level / 2, n - 1) * std / math.sqrt(n)
    return mean, mean - half, mean + half


def t_quantile(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0 < p < 1 or df < 1:
        raise ValueError(f"t_quantile: need 0 < p < 1 and df >= 1, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


def t_cdf(t: float, df: int) -> float:
    """Student's t CDF: ``1 - I_x(df/2, 1/2) / 2`` for ``t >= 0``, ``x = df / (df + t^2)``."""
    tail = 0.5 * incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t >= 0 else tail


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``, by its continued fraction (modified
    Lentz), using the symmetry ``I_x(a, b) = 1 - I_(1-x)(b, a)`` where it converges faster."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - incomplete_beta(b, a, 1 - x)
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    return math.exp(log_front) * _beta_fraction(a, b, x) / a


def _beta_fraction(a: float, b: float, x: float, tiny: float = 1e-300) -> float:
    """The continued fraction ``1 / (1 + d_1 / (1 + d_2 / ...))`` of the incomplete beta."""
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return result


def format_seconds(seconds: float) -> str:
    """``75`` -> ``1m15s``; ``3725`` -> ``1h02m``: the durations of the progress lines."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
