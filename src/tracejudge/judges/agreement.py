"""How far a judge agrees with people: the figures ``calibrate`` and ``agreement`` print.

Given pairs of (judge score, human label) on the judge's 0..1 scale:

- rank agreement: Spearman's rho and Kendall's tau-b (scipy, ties handled);
- mean absolute error between score and label;
- at a threshold: pass/fail accuracy, Cohen's kappa (agreement beyond chance)
  and the confusion matrix (judge pass/fail against human pass/fail);
- the items where judge and label disagree most.

A human label is a number in 0..1 or ``"pass"``/``"fail"``. Correlations and
the MAE use the numeric labels only (a pass/fail label has no place on the
scale); accuracy, kappa and the confusion matrix use every item. A figure that
is undefined (a constant column, every item in one class) is ``None`` with the
reason, never a made-up 0 or 1.

>>> pairs = [Pair(id=str(i), score=s, label=l) for i, (s, l) in enumerate(
...     [(0.9, 1.0), (0.7, 0.75), (0.6, 0.5), (0.2, 0.25), (0.1, 0.0)])]
>>> report = agreement_report(pairs, threshold=0.5)
>>> report.spearman, report.accuracy, report.kappa
(1.0, 1.0, 1.0)
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

MIN_ITEMS = 5
WORST_SHOWN = 5


class AgreementError(ValueError):
    """The figures cannot be computed from this input (too few items, a bad label)."""


class Pair(BaseModel):
    """One item: the judge's score and the human label (a number in 0..1, or pass/fail)."""

    id: str
    score: float
    label: float | bool
    note: str = ""

    @property
    def label_passed(self) -> bool | None:
        return self.label if isinstance(self.label, bool) else None


class Confusion(BaseModel):
    """Judge verdict (rows) against human verdict (columns) at the threshold."""

    judge_pass_human_pass: int = 0
    judge_pass_human_fail: int = 0
    judge_fail_human_pass: int = 0
    judge_fail_human_fail: int = 0


class Disagreement(BaseModel):
    id: str
    score: float
    label: float | bool
    gap: float
    note: str = ""


class AgreementReport(BaseModel):
    """Every figure, with why a figure is missing when it is."""

    items: int
    numeric_items: int
    threshold: float
    spearman: float | None
    kendall: float | None
    mae: float | None
    accuracy: float
    kappa: float | None
    confusion: Confusion
    worst: list[Disagreement]
    notes: list[str] = []


def label_value(raw: object, *, where: str) -> float | bool:
    """A dataset or MLflow label as a 0..1 number or a pass/fail boolean; a clear error otherwise.

    >>> label_value("pass", where="line 3"), label_value(0.25, where="line 4")
    (True, 0.25)
    """
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in {"pass", "passed", "yes", "true"}:
            return True
        if text in {"fail", "failed", "no", "false"}:
            return False
        try:
            raw = float(text)
        except ValueError:
            raise AgreementError(f"{where}: label {raw!r} is neither a number in 0..1 nor pass/fail") from None
    if isinstance(raw, (int, float)):
        value = float(raw)
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise AgreementError(f"{where}: label {raw!r} is outside 0..1")
        return value
    raise AgreementError(f"{where}: label {raw!r} is neither a number in 0..1 nor pass/fail")


def agreement_report(
    pairs: Sequence[Pair], *, threshold: float, greater_is_better: bool = True, worst: int = WORST_SHOWN
) -> AgreementReport:
    """All figures for ``pairs`` (at least :data:`MIN_ITEMS`); see the module docstring."""
    if len(pairs) < MIN_ITEMS:
        raise AgreementError(
            f"{len(pairs)} item(s) is too few for agreement statistics; at least {MIN_ITEMS} are needed"
        )
    notes: list[str] = []
    numeric = [p for p in pairs if not isinstance(p.label, bool)]
    scores = [p.score for p in numeric]
    labels = [float(p.label) for p in numeric]
    spearman = kendall = mae = None
    if len(numeric) >= MIN_ITEMS:
        mae = round(sum(abs(s - l) for s, l in zip(scores, labels)) / len(numeric), 4)
        if len(set(scores)) < 2 or len(set(labels)) < 2:
            side = "judge scores" if len(set(scores)) < 2 else "labels"
            notes.append(f"correlations undefined: the {side} are all the same")
        else:
            spearman, kendall = _correlations(scores, labels)
    else:
        notes.append(f"correlations and MAE need at least {MIN_ITEMS} numeric labels ({len(numeric)} given)")

    def passed(value: float) -> bool:
        return value >= threshold if greater_is_better else value <= threshold

    confusion = Confusion()
    agree = 0
    for p in pairs:
        judge_pass = passed(p.score)
        human_pass = p.label if isinstance(p.label, bool) else passed(float(p.label))
        agree += judge_pass == human_pass
        field = f"judge_{'pass' if judge_pass else 'fail'}_human_{'pass' if human_pass else 'fail'}"
        setattr(confusion, field, getattr(confusion, field) + 1)
    n = len(pairs)
    kappa = cohen_kappa(confusion)
    if kappa is None:
        notes.append("Cohen's kappa undefined: judge and labels put every item in the same single class")

    def gap(p: Pair) -> float:
        if isinstance(p.label, bool):
            return 0.0 if passed(p.score) == p.label else abs(p.score - threshold)
        return abs(p.score - float(p.label))

    ranked = sorted(pairs, key=lambda p: (-gap(p), p.id))
    return AgreementReport(
        items=n,
        numeric_items=len(numeric),
        threshold=threshold,
        spearman=spearman,
        kendall=kendall,
        mae=mae,
        accuracy=round(agree / n, 4),
        kappa=kappa,
        confusion=confusion,
        worst=[
            Disagreement(id=p.id, score=p.score, label=p.label, gap=round(gap(p), 4), note=p.note)
            for p in ranked[:worst]
            if gap(p) > 0
        ],
        notes=notes,
    )


def cohen_kappa(confusion: Confusion) -> float | None:
    """Cohen's kappa of a 2x2 confusion matrix; None when chance agreement is total.

    >>> cohen_kappa(Confusion(judge_pass_human_pass=20, judge_pass_human_fail=5,
    ...                       judge_fail_human_pass=10, judge_fail_human_fail=15))
    0.4
    """
    a, b = confusion.judge_pass_human_pass, confusion.judge_pass_human_fail
    c, d = confusion.judge_fail_human_pass, confusion.judge_fail_human_fail
    n = a + b + c + d
    if n == 0:
        return None
    observed = (a + d) / n
    expected = ((a + b) * (a + c) + (c + d) * (b + d)) / (n * n)
    if expected >= 1.0:
        return None
    return round((observed - expected) / (1.0 - expected), 4)


def _correlations(scores: list[float], labels: list[float]) -> tuple[float | None, float | None]:
    from scipy import stats  # installed with mlflow; imported only when figures are asked for

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = stats.spearmanr(scores, labels).statistic
        tau = stats.kendalltau(scores, labels).statistic  # tau-b: ties on either side handled
    return _finite(rho), _finite(tau)


def _finite(value: float) -> float | None:
    value = float(value)
    return round(value, 4) if math.isfinite(value) else None


def agreement_by_judge(pairs: list[Any]) -> list[dict[str, Any]]:
    """The figures per (judge, judge version) of judge/human pairs (``mlflow_io.feedback.HumanPair``).

    A group with too few pairs, or a human value that is not a score or pass/fail, says why instead.

    >>> agreement_by_judge([])
    []
    """
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for pair in pairs:
        groups[(pair.judge, pair.judge_version)].append(pair)
    out = []
    for (judge, version), members in sorted(groups.items()):
        entry: dict[str, Any] = {"judge": judge, "judge_version": version, "pairs": len(members)}
        try:
            threshold = sorted(p.threshold for p in members if p.threshold is not None)
            report = agreement_report(
                [
                    Pair(
                        id=f"{p.trace_id}/{p.span_id or 'root'}",
                        score=p.score,
                        label=label_value(p.human_value, where=f"trace {p.trace_id}, feedback {judge!r}"),
                        note=p.human_source,
                    )
                    for p in members
                ],
                threshold=threshold[len(threshold) // 2] if threshold else 0.8,
                greater_is_better=members[0].greater_is_better,
            )
            entry["report"] = report.model_dump()
        except AgreementError as exc:
            entry["report"] = None
            entry["refused"] = str(exc)
        out.append(entry)
    return out
