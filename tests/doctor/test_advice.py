"""The doctor's hint verdict on constructed reports: it names the bias that fits a constant hint
(the adapter's, or the student's own when the hints have no adapter) and stays quiet below its
threshold."""

from __future__ import annotations

from detkd.doctor.advice import THRESHOLDS, hint_check


def report(share: float) -> dict:
    return {"hint": {"constant_share": {"0": share, "1": share}}}


def settings(adaptation: bool, loss: str = "hint_l2") -> dict:
    return {"hint": {"loss": loss, "adaptation": adaptation}}


def test_a_constant_hint_names_the_adapter_or_the_students_own_bias() -> None:
    high = THRESHOLDS["constant_share"] + 0.2
    (adapted,), tips = hint_check(report(high), settings(adaptation=True))
    assert adapted["status"] == "warn" and adapted["message"].endswith("the adapter's bias")
    assert [t[1]["key"] for t in tips] == ["distill.hint.loss"]
    (plain,), _ = hint_check(report(high), settings(adaptation=False))
    assert plain["status"] == "warn" and "adapter's" not in plain["message"]
    assert "student's own FPN output layer" in plain["message"]


def test_below_the_threshold_or_with_pkd_there_is_no_warning() -> None:
    low = THRESHOLDS["constant_share"] - 0.2
    (ok,), tips = hint_check(report(low), settings(adaptation=False))
    assert ok["status"] == "ok" and not tips
    assert hint_check(report(0.9), settings(adaptation=True, loss="pkd")) == ([], [])
