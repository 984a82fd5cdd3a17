"""`tracejudge calibrate` and `tracejudge agreement`: the statistics, the plumbing, the bad input.

Every expected figure here is counted by hand (in the comments), never recomputed by the code under test.
"""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from tracejudge.cli import main
from tracejudge.config import ExecutionConfig
from tracejudge.judges import BUILTIN_JUDGES, LLMClient
from tracejudge.judges.agreement import AgreementError, Confusion, Pair, agreement_report, cohen_kappa, label_value
from tracejudge.judges.calibration import (
    CalibrationError,
    calibrate,
    load_dataset,
    parse_dataset,
    shipped_dataset,
)
from tracejudge.tasks.runtime import reset_runtime
from tracejudge.testing import FakeLLMServer

RELEVANCE = BUILTIN_JUDGES["relevance"]


def pairs(scores, labels):
    return [Pair(id=f"i{n}", score=s, label=label) for n, (s, label) in enumerate(zip(scores, labels))]


# ----------------------------------------------------------------------------- statistics


def test_perfect_and_reversed_agreement():
    up = [0.1, 0.3, 0.5, 0.7, 0.9]
    perfect = agreement_report(pairs(up, [0.0, 0.25, 0.5, 0.75, 1.0]), threshold=0.6)
    assert (perfect.spearman, perfect.kendall, perfect.accuracy, perfect.kappa) == (1.0, 1.0, 1.0, 1.0)
    assert perfect.mae == pytest.approx((0.1 + 0.05 + 0 + 0.05 + 0.1) / 5)
    reversed_ = agreement_report(pairs(up, [1.0, 0.75, 0.5, 0.25, 0.0]), threshold=0.6)
    assert (reversed_.spearman, reversed_.kendall) == (-1.0, -1.0)


def test_ties_are_handled_by_tau_b_and_average_ranks():
    report = agreement_report(pairs([0.1, 0.2, 0.3, 0.4, 0.5], [0, 0, 1, 1, 1]), threshold=0.5)
    # Kendall tau-b: 6 concordant, 0 discordant, 4 pairs tied on the labels: 6 / sqrt(10 * 6)
    assert report.kendall == pytest.approx(6 / math.sqrt(60), abs=1e-4)
    # Spearman: label ranks 1.5,1.5,4,4,4 against 1..5: 7.5 / sqrt(10 * 7.5)
    assert report.spearman == pytest.approx(7.5 / math.sqrt(75), abs=1e-4)


def test_cohen_kappa_and_confusion_matrix_counted_by_hand():
    # the textbook case: po = 35/50 = 0.7, pe = (25*30 + 25*20)/2500 = 0.5, kappa = 0.2/0.5 = 0.4
    assert cohen_kappa(Confusion(judge_pass_human_pass=20, judge_pass_human_fail=5,
                                 judge_fail_human_pass=10, judge_fail_human_fail=15)) == 0.4
    report = agreement_report(pairs([0.9, 0.9, 0.2, 0.2, 0.9, 0.2], [1.0, 0.0, 0.0, 1.0, 1.0, 0.0]), threshold=0.5)
    c = report.confusion
    assert (c.judge_pass_human_pass, c.judge_pass_human_fail, c.judge_fail_human_pass, c.judge_fail_human_fail) == (2, 1, 1, 2)
    assert report.accuracy == pytest.approx(4 / 6, abs=1e-4)
    # po = 4/6, pe = (3*3 + 3*3)/36 = 0.5: kappa = (2/3 - 1/2) / (1/2) = 1/3
    assert report.kappa == pytest.approx(1 / 3, abs=1e-4)
    assert report.worst[0].gap == pytest.approx(0.9) and report.worst[0].id in {"i1", "i3"}


def test_lower_is_better_judges_pass_at_or_below_the_threshold():
    report = agreement_report(pairs([0.1, 0.2, 0.8, 0.9, 0.15], [0.0, 0.1, 1.0, 0.9, 0.3]), threshold=0.3,
                              greater_is_better=False)
    assert report.confusion.judge_pass_human_pass == 3 and report.accuracy == 1.0


def test_undefined_figures_are_none_with_a_reason_never_made_up():
    constant = agreement_report(pairs([0.85] * 5, [0.0, 0.25, 0.5, 0.75, 1.0]), threshold=0.8)
    assert constant.spearman is None and constant.kendall is None
    assert "the judge scores are all the same" in constant.notes[0]
    one_class = agreement_report(pairs([0.9] * 5, [1.0] * 5), threshold=0.8)
    assert one_class.kappa is None and one_class.accuracy == 1.0
    assert any("kappa undefined" in n for n in one_class.notes)


def test_pass_fail_labels_count_in_accuracy_not_in_correlations():
    labels = [label_value(text, where="t") for text in ("pass", "fail", "pass", "pass", "pass")]
    report = agreement_report(pairs([0.9, 0.1, 0.8, 0.3, 0.95], labels), threshold=0.5)
    assert report.numeric_items == 0 and report.spearman is None and report.mae is None
    assert report.accuracy == pytest.approx(0.8)  # item 3: judge fail, human pass


def test_too_few_items_and_bad_labels_are_refused():
    with pytest.raises(AgreementError, match="4 item\\(s\\) is too few .* at least 5"):
        agreement_report(pairs([0.1] * 4, [0.0] * 4), threshold=0.5)
    with pytest.raises(AgreementError, match="line 3: label 1.5 is outside 0..1"):
        label_value(1.5, where="line 3")
    with pytest.raises(AgreementError, match="neither a number in 0..1 nor pass/fail"):
        label_value("great", where="line 4")


# ----------------------------------------------------------------------------- datasets


def test_every_builtin_judge_ships_a_labelled_set_of_at_least_20_items():
    for name, judge in BUILTIN_JUDGES.items():
        path = shipped_dataset(name)
        assert path is not None, name
        items = load_dataset(path, judge=judge)  # every line has the judge's variables and a valid label
        assert len(items) >= 20, name
        cases = {item.case for item in items}
        assert cases == {"clear", "borderline"}, name
        assert len({item.label for item in items}) >= 4, name  # spread over the levels
        assert len({item.id for item in items}) == len(items)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"output": "Paris", "label": 1}', "line 2: judge 'relevance' needs template variable {input}"),
        ('{"output": "x", "input": "q", "label": 1.5}', "line 2: label 1.5 is outside 0..1"),
        ('{"output": "x", "input": "q", "label": "good"}', "line 2: label 'good' is neither"),
        ('{"output": "x", "input": "q"}', "line 2: no 'label'"),
        ('{"output": "x", "input": "q", "label": 1, "lable": 2}', "line 2: unknown key(s) ['lable']"),
        ('not json', "line 2: not valid JSON"),
    ],
)
def test_dataset_errors_name_the_line(line, message):
    good = '{"output": "Canberra", "input": "Capital of Australia?", "label": 1}'
    with pytest.raises(CalibrationError) as info:
        parse_dataset([good, line], judge=RELEVANCE, source="mine.jsonl")
    assert f"mine.jsonl, {message}" in str(info.value)


# ----------------------------------------------------------------------------- calibrate against the test server

# (judge score scripted through the server, label). Hand count at threshold 0.7:
#   MAE = (0.1 + 0.05 + 0.05 + 0.35 + 0.1 + 0.05) / 6 = 0.116667
#   judge pass: a, b, f; human pass: a, b, f -> accuracy 1, kappa 1
#   Spearman: score ranks a5 b4 c2 d3 e1 f6, label ranks 5.5 4 2.5 2.5 1 5.5 -> 16.5 / sqrt(17.5 * 16.5) = 0.971008
#   Kendall tau-b: 13 concordant, 0 discordant, 2 tied on labels -> 13 / sqrt(15 * 13) = 0.930949
SCRIPTED = [("a", 0.9, 1.0), ("b", 0.8, 0.75), ("c", 0.3, 0.25), ("d", 0.6, 0.25), ("e", 0.1, 0.0), ("f", 0.95, 1.0)]


def _scripted_lines() -> list[str]:
    return [
        json.dumps({"id": i, "input": "Capital of Australia?", "output": f"An answer [[tj:score={s}]]", "label": label})
        for i, s, label in SCRIPTED
    ]


def test_calibrate_over_the_test_server_gives_the_figures_counted_by_hand():
    items = parse_dataset(_scripted_lines(), judge=RELEVANCE, source="scripted")
    seen: list[tuple[int, int]] = []
    with FakeLLMServer() as srv:

        async def go():
            client = LLMClient(base_url=srv.base_url, api_key="sk-test")
            try:
                return await calibrate(RELEVANCE, items, client=client, execution=ExecutionConfig(), model="gpt-4o-mini",
                                       threshold=0.7, progress=lambda done, total: seen.append((done, total)))
            finally:
                await client.aclose()

        result = asyncio.run(go())
        assert srv.stats()["requests"] == 6
    report = result.report
    assert result.errors == 0 and report is not None
    assert report.mae == pytest.approx(0.116667, abs=1e-4)
    assert report.spearman == pytest.approx(0.971008, abs=1e-4)
    assert report.kendall == pytest.approx(0.930949, abs=1e-4)
    assert (report.accuracy, report.kappa) == (1.0, 1.0)
    assert report.worst[0].id == "d" and report.worst[0].gap == pytest.approx(0.35)
    assert seen[0] == (0, 6) and seen[-1] == (6, 6)


@pytest.fixture
def llm_env(monkeypatch, tmp_path):
    with FakeLLMServer() as srv:
        monkeypatch.setenv("TRACEJUDGE_LLM_BASE_URL", srv.base_url)
        monkeypatch.setenv("TRACEJUDGE_LLM_API_KEY", "sk-test")
        monkeypatch.delenv("TRACEJUDGE_CONFIG", raising=False)
        reset_runtime()
        yield srv
        reset_runtime()


def test_calibrate_command_on_a_shipped_set(llm_env, capsys):
    assert main(["calibrate", "--judge", "groundedness", "--threshold", "0.8"]) == 0
    out, err = capsys.readouterr()
    assert "judge groundedness (version " in out and "20 item(s), 0 judge error(s)" in out
    assert "Spearman n/a" in out and "the judge scores are all the same" in out  # the test server's constant 0.85
    assert "accuracy " in out and "Cohen's kappa" in out and "human pass  human fail" in out
    assert "largest disagreements:" in out
    assert "calibrate groundedness [" in err and "20/20" in err  # the progress bar
    assert llm_env.stats()["requests"] == 20


def test_calibrate_command_json_and_scripted_dataset(llm_env, tmp_path, capsys):
    dataset = tmp_path / "mine.jsonl"
    dataset.write_text("\n".join(_scripted_lines()) + "\n")
    assert main(["calibrate", "--judge", "relevance", "--dataset", str(dataset), "--threshold", "0.7",
                 "--format", "json", "--quiet"]) == 0
    out, err = capsys.readouterr()
    data = json.loads(out)
    assert data["report"]["spearman"] == pytest.approx(0.971008, abs=1e-4)
    assert [i["score"] for i in data["items"]] == [s for _, s, _ in SCRIPTED]
    assert err == ""


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--judge", "relevence"], "unknown judge 'relevence'; did you mean 'relevance'?"),
        (["--judge", "relevance", "--threshold", "1.5"], "--threshold must be in 0..1"),
    ],
)
def test_calibrate_command_bad_input(llm_env, capsys, argv, message):
    assert main(["calibrate", *argv]) == 2
    assert message in capsys.readouterr().err


def test_calibrate_command_refuses_fewer_than_five_items(llm_env, tmp_path, capsys):
    dataset = tmp_path / "tiny.jsonl"
    dataset.write_text("\n".join(_scripted_lines()[:4]) + "\n")
    assert main(["calibrate", "--judge", "relevance", "--dataset", str(dataset)]) == 2
    assert "has 4 item(s); statistics need at least 5" in capsys.readouterr().err


# ----------------------------------------------------------------------------- agreement with people in MLflow


def test_agreement_pairs_judges_with_human_feedback_in_mlflow(mlflow_store, capsys):
    import mlflow
    from mlflow import MlflowClient
    from mlflow.entities import AssessmentSource

    from tracejudge.judges.model import JudgeResult
    from tracejudge.mlflow_io.store import TraceStore
    from tracejudge.testing.workflows import record_plain_trace

    store = TraceStore(mlflow_store)
    experiment_id = mlflow.create_experiment(f"agreement-{Path(mlflow_store).name}-{id(capsys)}")
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        # judge score, human label: the same six pairs as SCRIPTED, plus one trace without human feedback
        for name, score, label in SCRIPTED + [("g", 0.5, None)]:
            trace_id = record_plain_trace(f"question {name}", f"answer {name}")
            mlflow.flush_trace_async_logging()  # the trace is in the store before we add to it
            root = MlflowClient().get_trace(trace_id).data.spans[0].span_id
            result = JudgeResult(name="relevance", span_id=root, score=score, threshold=0.7, passed=score >= 0.7,
                                 key=f"k-{name}", judge_version="v1", model="gpt-4o-mini")
            store.write_all(store.result_calls(trace_id, [result], evaluation_id="e"))
            if label is not None:
                mlflow.log_feedback(trace_id=trace_id, name="relevance", value=label, span_id=root,
                                    source=AssessmentSource(source_type="HUMAN", source_id="reviewer@example.com"))
        assert main(["agreement", "--experiment-id", experiment_id, "--format", "json"]) == 0
    finally:
        mlflow.set_experiment("tracejudge-tests")
    data = json.loads(capsys.readouterr().out)
    assert data["pairs"] == 6
    (entry,) = data["judges"]
    assert (entry["judge"], entry["judge_version"], entry["pairs"]) == ("relevance", "v1", 6)
    report = entry["report"]
    assert report["spearman"] == pytest.approx(0.971008, abs=1e-4)
    assert report["kendall"] == pytest.approx(0.930949, abs=1e-4)
    assert report["mae"] == pytest.approx(0.116667, abs=1e-4)
    assert report["threshold"] == 0.7 and report["kappa"] == 1.0

    assert main(["agreement", "--experiment-id", experiment_id]) == 0
    table = capsys.readouterr().out
    assert "judge relevance (version v1): 6 pair(s)" in table and "Spearman 0.971" in table

    # the monitoring report includes it when such feedback exists (read from MLflow)
    from tracejudge.monitor import MonitorQuery, summarise_quality

    summary = summarise_quality(MonitorQuery(experiment=experiment_id, source="mlflow"), redis=None)
    (entry,) = summary.human_agreement
    assert entry["judge"] == "relevance" and entry["report"]["kendall"] == pytest.approx(0.930949, abs=1e-4)
    assert main(["report", "--experiment-id", experiment_id, "--source", "mlflow"]) == 0
    report = capsys.readouterr().out
    assert "agreement with people" in report and "relevance (version v1): 6 pair(s), Spearman 0.971" in report
