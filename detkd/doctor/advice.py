"""The doctor's verdicts and advice, from the measured numbers (no advice without its number).

Every threshold is in :data:`THRESHOLDS`. A verdict is ``{"check", "status", "message"}`` with
status ``ok``, ``info``, ``warn`` or ``bad``; an advice is ``{"key", "suggestion", "evidence"}``
naming the config key to change. Advice is ranked by the evidence: what makes distillation
useless (a teacher that cannot teach, a mapping error) first, then what wastes it (a term
that dominates or vanishes), then what would sharpen it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from detkd.utils import formatting

THRESHOLDS: dict[str, float] = {
    "teacher_pos_acc": 0.5,  # below: the teacher's argmax is wrong on most positive RoIs
    "teacher_ap50": 0.5,  # below: the teacher misses most objects of the student's training data
    "teacher_rpn_auc": 0.8,  # below: its objectness barely separates objects from background
    "teacher_argmax_bg": 0.3,  # above: it calls many positives background
    "neg_p_bg_redundant": 0.97,  # above: on negatives the soft label is the hard label
    "optimum_drop": 0.05,  # the background weight lowers the student's best P(true) by more
    "dominant_share": 0.7,  # a distillation term above this share of a module's gradient
    "vanishing_share": 0.02,  # a distillation term below this share on every module
    "target_dominant": 0.3,  # the share a suggested weight aims at for a dominating term
    "target_vanishing": 0.15,  # ... and for a vanishing one
    "constant_share": 0.5,  # above: the hint is mostly a per-channel constant
    "anchor_match": 0.5,  # below (RPN terms on): most sampled anchors have no teacher partner
    "gt_score_gap": 0.1,  # above: mapped ground truth scores differ (resolution / pairing error)
}

WEIGHT_KEYS = {"distill_rcn_cls": "distill.rcn_cls.weight", "distill_rpn_cls": "distill.rpn_cls.weight",
               "distill_rcn_reg": "distill.rcn_reg.nu", "distill_rpn_reg": "distill.rpn_reg.nu",
               "distill_hint": "distill.hint.gamma"}
SEVERITY = {"bad": 0, "warn": 1, "info": 2, "ok": 3}
Report = Mapping[str, Any]


def diagnose(report: Report, settings: Mapping[str, Any]) -> tuple[list[dict], list[dict]]:
    """The verdicts and the ranked advice for a doctor report. ``settings``: the distillation
    section as a dict (``distill.*``), for the current values the advice starts from."""
    verdicts, advice = [], []
    for check in (teacher_check, objective_check, alignment_check, balance_check, clip_check, hint_check):
        found = check(report, settings)
        verdicts += found[0]
        advice += [(rank, a) for rank, a in found[1]]
    advice.sort(key=lambda item: item[0])
    verdicts.sort(key=lambda v: SEVERITY[v["status"]])
    return verdicts, [a for _, a in advice]


def verdict(check: str, status: str, message: str) -> dict[str, str]:
    return {"check": check, "status": status, "message": message}


def tip(key: str, suggestion: str, evidence: str) -> dict[str, str]:
    return {"key": key, "suggestion": suggestion, "evidence": evidence}


def teacher_check(report: Report, settings: Mapping[str, Any]) -> tuple[list, list]:
    """Can this teacher teach on this data?"""
    t, th = report["teacher"], THRESHOLDS
    acc, ap50, rpn, bg = t["pos_acc"], t["ap50"], t["rpn_separation"], t["pos_argmax_bg"]
    evidence = (f"teacher AP50 {pct(ap50)} on the sampled training images; {pct(acc)} of the positive RoIs right "
                f"(P(true) {num(t['pos_p_true'])}, background argmax {pct(bg)}); RPN objectness AUC {num(rpn)}")
    weak = [name for name, value, limit in (("RoI accuracy", acc, th["teacher_pos_acc"]),
                                            ("AP50", ap50, th["teacher_ap50"]), ("RPN AUC", rpn, th["teacher_rpn_auc"]))
            if value is not None and value < limit]
    if weak:
        message = (f"the teacher gets {pct(acc)} of positive RoIs right on this data (AP50 {pct(ap50)}, RPN AUC "
                   f"{num(rpn)}): its soft labels will mostly add noise; train it longer, or lower the soft weight")
        return [verdict("teacher", "bad", message)], [
            (0, tip("teacher.checkpoint", "train the teacher longer (or a bigger one) until its training-split "
                    "AP50 is at least its test AP50", evidence)),
            (1, tip("distill.rcn_cls.mode", "add, with distill.rcn_cls.weight 0.1-0.3: the ground truth at full "
                    "weight, the teacher's scores only as a small extra", evidence))]
    out = [verdict("teacher", "ok", f"the teacher can teach: {evidence}")]
    if bg is not None and bg > th["teacher_argmax_bg"]:
        out.append(verdict("teacher", "warn", f"the teacher calls {pct(bg)} of the positive RoIs background"))
    if t["neg_p_bg"] is not None and t["neg_p_bg"] > th["neg_p_bg_redundant"]:
        out.append(verdict("teacher", "info", f"on negative RoIs the teacher gives background {num(t['neg_p_bg'])}: "
                           "there its soft label repeats the hard one"))
    return out, []


def objective_check(report: Report, settings: Mapping[str, Any]) -> tuple[list, list]:
    """Does the classification objective pull the student's positives toward background?"""
    t = report["teacher"]
    got, even = t.get("pos_optimum_p_true"), t.get("pos_optimum_p_true_w1")
    if got is None or even is None or even - got <= THRESHOLDS["optimum_drop"]:
        return [], []
    cls = settings["rcn_cls"]
    evidence = (f"with w0 = {cls['bg_weight']:g} ({cls['mode']}, mu = {cls['mu']:g}) the student's best P(true) on a "
                f"positive RoI is {num(got)}; with w0 = 1 it is {num(even)}")
    return [verdict("objective", "warn", f"the background weight pulls positives toward background: {evidence}")], [
        (2, tip("distill.rcn_cls.bg_weight", "1.0, or distill.rcn_cls.mode: add (the ground truth at full weight)",
                evidence))]


def alignment_check(report: Report, settings: Mapping[str, Any]) -> tuple[list, list]:
    """Does the distillation code read the teacher where the student looks?"""
    a, th = report["alignment"], THRESHOLDS
    out, tips = [verdict("alignment", "info", a["pairing"])], []
    gap = a["mapped_gt_score_gap"]
    if gap is not None and gap > th["gt_score_gap"]:
        evidence = f"ground-truth boxes mapped into the teacher's frame score {num(gap)} apart from the teacher's own"
        out.append(verdict("alignment", "bad", f"{evidence}: a resolution or level-pairing error"))
        tips.append((0, tip("model.min_size", "check the student's and the teacher's model.min_size/max_size and "
                            "model.rpn.anchor_sizes: the level pairing assumes their ratio", evidence)))
    rpn_on = settings["rpn_cls"]["enabled"] or settings["rpn_reg"]["enabled"]
    share = a["anchor_match_share"]
    if rpn_on and share is not None and share < th["anchor_match"]:
        evidence = f"{pct(share)} of the student's sampled anchors have a teacher anchor"
        out.append(verdict("alignment", "warn", f"{evidence}: the RPN terms see few samples"))
        tips.append((1, tip("model.rpn.anchor_sizes", "the teacher's sizes times the student's scale (and the same "
                            "aspect ratios), so that paired levels hold the same anchors", evidence)))
    return out, tips


def balance_check(report: Report, settings: Mapping[str, Any]) -> tuple[list, list]:
    """Does a distillation term dominate a module's gradient, or vanish everywhere?"""
    out, tips = [], []
    for term, entry in report["terms"].items():
        if term not in WEIGHT_KEYS:
            continue
        shares = {m: s for m, s in entry["grad_share"].items() if s is not None}
        if not shares:
            continue
        module, top = max(shares.items(), key=lambda kv: kv[1])
        key, current = WEIGHT_KEYS[term], current_weight(term, settings)
        if top > THRESHOLDS["dominant_share"]:
            factor = rescale(top, THRESHOLDS["target_dominant"])
            evidence = f"{term} takes {pct(top)} of the gradient norm on the {module}"
            out.append(verdict("balance", "warn", f"{evidence}: it dominates the detection losses there"))
            tips.append((1 + (1 - top), tip(key, f"{current * factor:.3g} (now {current:.3g}) for about "
                                            f"{pct(THRESHOLDS['target_dominant'])} there", evidence)))
        elif top < THRESHOLDS["vanishing_share"]:
            factor = rescale(top, THRESHOLDS["target_vanishing"])
            evidence = f"{term} gets at most {pct(top)} of any module's gradient norm (the {module})"
            out.append(verdict("balance", "warn", f"{evidence}: it cannot steer training"))
            tips.append((2 + top, tip(key, f"{current * factor:.3g} (now {current:.3g}) for about "
                                      f"{pct(THRESHOLDS['target_vanishing'])} there", evidence)))
    return out, tips


def clip_check(report: Report, settings: Mapping[str, Any]) -> tuple[list, list]:
    """Does gradient clipping shrink every step, so that a large term slows the others?"""
    grad = report.get("gradient") or {}
    total, clip = grad.get("total_norm"), grad.get("clip_grad_norm")
    if not total or not clip or total <= clip:
        return [], []
    evidence = (f"the total gradient norm is {total:.3g} (median over batches) against train.clip_grad_norm {clip:g}: "
                f"every step is scaled by {clip / total:.2f}, the detection losses' too")
    return [verdict("balance", "warn", evidence)], [
        (1.5, tip("train.clip_grad_norm", f"about {2 * total:.3g}, or lower the weight of the largest term", evidence))]


def rescale(share: float, target: float) -> float:
    """The weight factor that moves a term from ``share`` to about ``target`` of a module's
    summed norms, the other terms fixed: ``f = target (1 - share) / ((1 - target) share)``."""
    share = min(max(share, 1e-6), 1 - 1e-6)
    return target * (1 - share) / ((1 - target) * share)


def current_weight(term: str, settings: Mapping[str, Any]) -> float:
    section = settings[term.removeprefix("distill_")]
    return float(section.get("weight", section.get("nu", section.get("gamma", 1.0))))


def hint_check(report: Report, settings: Mapping[str, Any]) -> tuple[list, list]:
    """Is the hint mostly a per-channel constant (which a bias fits for free: the adapter's, or
    without adaptation the student's own last FPN bias)?"""
    shares = report.get("hint", {}).get("constant_share") or {}
    if not shares or settings["hint"]["loss"] not in ("hint_l2", "hint_l1"):
        return [], []
    mean = sum(shares.values()) / len(shares)
    evidence = (f"{pct(mean)} of the teacher maps' variance is a per-channel constant (by level: "
                + ", ".join(f"{k} {pct(v)}" for k, v in shares.items()) + ")")
    if mean <= THRESHOLDS["constant_share"]:
        return [verdict("hint", "ok", evidence)], []
    bias = ("the adapter's bias" if settings["hint"].get("adaptation", True)
            else "a bias of the student's own FPN output layer (no adapter: its conv's or its norm's)")
    return [verdict("hint", "warn", f"{evidence}: the plain hint is mostly learnt by {bias}")], [
        (2, tip("distill.hint.loss", "pkd (each channel standardised: the constant part drops out; weight "
                "distill.hint.gamma about 6 with distill.hint.level_weighting: sum)", evidence))]


def pct(value: float | None) -> str:
    """A share as the doctor writes it: ``43.2 %``; ``-`` for None."""
    return formatting.pct(value, suffix=" %")


def num(value: float | None) -> str:
    """A measurement as the doctor writes it: ``0.612``; ``-`` for None."""
    return formatting.num(value, ".3f")
