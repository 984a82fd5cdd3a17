"""Run one judge over a labelled set and measure how far it agrees with the labels.

A dataset is JSON Lines, one item a line: the judge's variables (``output``,
``input``, ``context``, ``expected``, ``inputs``, ``metadata``, as in a
:class:`~tracejudge.judges.JudgeInput`) plus ``label``: a human score in 0..1
or ``"pass"``/``"fail"``. Optional: ``id``, ``case`` (``clear`` or
``borderline``) and ``note``. The package ships a set for each built-in judge
(``tracejudge/judges/datasets/<judge>.jsonl``, written and labelled by us; see
the README there).

>>> items = parse_dataset(['{"output": "Paris", "input": "Capital of France?", "label": 1}'] * 5,
...                       judge=default_registry().get("relevance"), source="inline")
>>> len(items), items[0].label
(5, 1.0)
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tracejudge.config import ExecutionConfig
from tracejudge.judges.agreement import (
    MIN_ITEMS,
    AgreementError,
    AgreementReport,
    Pair,
    agreement_report,
    label_value,
)
from tracejudge.judges.client import LLMClient, SharedLimiter
from tracejudge.judges.errors import JudgeInputError
from tracejudge.judges.model import AnyJudge, JudgeInput, JudgeResult, to_text
from tracejudge.judges.prompt import resolve_variable
from tracejudge.judges.registry import default_registry
from tracejudge.judges.runner import JudgeJob, run_one

DATASET_PACKAGE = "tracejudge.judges.datasets"
INPUT_FIELDS = ("output", "input", "context", "expected", "inputs", "metadata", "tool_calls", "trajectory")


class CalibrationError(ValueError):
    """A dataset or request calibrate cannot use; the message names the line or the key."""


class CalibrationItem(BaseModel):
    """One labelled item of a dataset."""

    model_config = ConfigDict(extra="forbid")

    id: str
    label: float | bool
    case: str = ""
    note: str = ""
    input: JudgeInput = Field(default_factory=JudgeInput)


class ItemResult(BaseModel):
    item: CalibrationItem
    result: JudgeResult


class CalibrationResult(BaseModel):
    """What ``tracejudge calibrate`` prints."""

    judge: str
    judge_version: str
    model: str
    dataset: str
    threshold: float
    items: list[ItemResult]
    errors: int
    report: AgreementReport | None
    refused: str | None = None  # why no figures were computed (e.g. too few scored items)


def shipped_dataset(judge_name: str) -> Path | None:
    """The labelled set shipped for a built-in judge, if there is one."""
    path = resources.files(DATASET_PACKAGE).joinpath(f"{judge_name}.jsonl")
    return Path(str(path)) if path.is_file() else None


def load_dataset(path: str | Path, *, judge: AnyJudge) -> list[CalibrationItem]:
    """Read and check a JSONL dataset for ``judge`` (errors name the file and line)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise CalibrationError(f"cannot read dataset {path}: {exc.strerror or exc}") from None
    return parse_dataset(lines, judge=judge, source=str(path))


def parse_dataset(lines: Iterable[str], *, judge: AnyJudge, source: str) -> list[CalibrationItem]:
    """Check every line: JSON object, a label in 0..1 or pass/fail, every variable the judge needs."""
    items: list[CalibrationItem] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{source}, line {number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"{where}: not valid JSON ({exc.msg} at char {exc.pos})") from None
        if not isinstance(data, dict):
            raise CalibrationError(f"{where}: expected a JSON object, got {type(data).__name__}")
        if "label" not in data:
            raise CalibrationError(f"{where}: no 'label' (a human score in 0..1, or pass/fail)")
        unknown = sorted(set(data) - set(INPUT_FIELDS) - {"id", "label", "case", "note"})
        if unknown:
            raise CalibrationError(
                f"{where}: unknown key(s) {unknown}; an item has {', '.join(INPUT_FIELDS)}, label, id, case, note"
            )
        try:
            label = label_value(data["label"], where=where)
        except AgreementError as exc:
            raise CalibrationError(str(exc)) from None
        fields = {k: data[k] for k in INPUT_FIELDS if k in data}
        if "context" in fields and not isinstance(fields["context"], list):
            fields["context"] = [fields["context"]]
        item_id = str(data.get("id") or f"line-{number}")
        try:
            judge_input = JudgeInput(target=item_id, **fields)
        except ValidationError as exc:
            error = exc.errors()[0]
            raise CalibrationError(f"{where}: {'.'.join(map(str, error['loc']))}: {error['msg']}") from None
        for variable in judge.variables:
            try:
                resolve_variable(judge.name, variable, judge_input)
            except JudgeInputError as exc:
                raise CalibrationError(f"{where}: {exc.message}") from None
        items.append(
            CalibrationItem(
                id=item_id, label=label, case=str(data.get("case", "")), note=str(data.get("note", "")), input=judge_input
            )
        )
    return items


async def calibrate(
    judge: AnyJudge,
    items: list[CalibrationItem],
    *,
    client: LLMClient | None,
    execution: ExecutionConfig,
    model: str,
    threshold: float,
    dataset: str = "",
    limiter: SharedLimiter | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CalibrationResult:
    """Judge every item (as the workers would: same client, timeouts, limiter) and compute the figures."""
    if len(items) < MIN_ITEMS:
        raise CalibrationError(
            f"dataset {dataset or '(inline)'} has {len(items)} item(s); statistics need at least {MIN_ITEMS}"
        )
    semaphore = asyncio.Semaphore(max(1, execution.concurrency))
    done = 0

    async def one(item: CalibrationItem) -> ItemResult:
        nonlocal done
        job = JudgeJob(judge=judge, input=item.input, threshold=threshold, model=model)
        async with semaphore:
            result = await run_one(job, client=client, execution=execution, default_model=model, limiter=limiter)
        done += 1
        if progress is not None:
            progress(done, len(items))
        return ItemResult(item=item, result=result)

    if progress is not None:
        progress(0, len(items))
    results = list(await asyncio.gather(*(one(item) for item in items)))
    scored = [r for r in results if r.result.score is not None]
    report, refused = None, None
    try:
        report = agreement_report(
            [Pair(id=r.item.id, score=float(r.result.score), label=r.item.label, note=r.item.case)  # type: ignore[arg-type]
             for r in scored],
            threshold=threshold,
            greater_is_better=judge.greater_is_better,
        )
    except AgreementError as exc:
        refused = f"{exc} ({len(results) - len(scored)} of {len(results)} judge calls failed)"
    return CalibrationResult(
        judge=judge.name,
        judge_version=judge.version,
        model=model,
        dataset=dataset,
        threshold=threshold,
        items=results,
        errors=len(results) - len(scored),
        report=report,
        refused=refused,
    )


def format_table(result: CalibrationResult) -> str:
    """The human-readable form of a calibration (``--format table``)."""
    lines = [
        f"judge {result.judge} (version {result.judge_version})  model {result.model}  threshold {result.threshold:g}",
        f"dataset {result.dataset}: {len(result.items)} item(s), {result.errors} judge error(s)",
    ]
    report = result.report
    if report is None:
        lines.append(f"no figures: {result.refused}")
    else:
        lines += format_report(report, previews={r.item.id: item_preview(r.item) for r in result.items})
    errors = [r for r in result.items if r.result.error is not None]
    if errors:
        lines.append("judge errors:")
        lines += [f"  {r.item.id}: {r.result.error.type}: {r.result.error.message[:120]}" for r in errors[:10]]  # type: ignore[union-attr]
    return "\n".join(lines)


def format_report(report: AgreementReport, *, previews: dict[str, str] | None = None) -> list[str]:
    """The figures of one agreement report as table lines."""

    def f(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    c = report.confusion
    lines = [
        f"agreement ({report.numeric_items} numeric labels): Spearman {f(report.spearman)}  "
        f"Kendall {f(report.kendall)}  MAE {f(report.mae)}",
        f"pass/fail at {report.threshold:g} ({report.items} items): accuracy {f(report.accuracy)}  "
        f"Cohen's kappa {f(report.kappa)}",
        "              human pass  human fail",
        f"  judge pass  {c.judge_pass_human_pass:>10}  {c.judge_pass_human_fail:>10}",
        f"  judge fail  {c.judge_fail_human_pass:>10}  {c.judge_fail_human_fail:>10}",
    ]
    if report.worst:
        lines.append("largest disagreements:")
        for d in report.worst:
            label = ("pass" if d.label else "fail") if isinstance(d.label, bool) else f"{d.label:g}"
            tag = f" [{d.note}]" if d.note else ""
            preview = (previews or {}).get(d.id, "")
            lines.append(f"  {d.id}: judge {d.score:.2f}  label {label}  gap {d.gap:.2f}{tag}{preview}")
    lines += [f"note: {n}" for n in report.notes]
    return lines


def item_preview(item: CalibrationItem, limit: int = 60) -> str:
    text = to_text(item.input.output).replace("\n", " ")
    return f'  "{text[:limit]}{"..." if len(text) > limit else ""}"'


def result_json(result: CalibrationResult) -> dict[str, Any]:
    """The JSON form (``--format json``): the figures and every item's score and label."""
    return {
        "judge": result.judge,
        "judge_version": result.judge_version,
        "model": result.model,
        "dataset": result.dataset,
        "threshold": result.threshold,
        "errors": result.errors,
        "refused": result.refused,
        "report": result.report.model_dump() if result.report else None,
        "items": [
            {
                "id": r.item.id,
                "case": r.item.case,
                "label": r.item.label,
                "score": r.result.score,
                "error": r.result.error.model_dump() if r.result.error else None,
            }
            for r in result.items
        ],
    }
