"""Issue 17, point 6: sampling a gating judge never turns a trace into an error.

A judge listed in ``quality_gate.judges`` and sampled by ``judges.sampling.judges`` is left
out of most background traces by the user's choice: the verdict is decided on the gating
judges that ran and names the sampled-out ones; with every gating judge sampled out it is
``skipped``. Through the real pipeline (Redis, a real worker, sqlite MLflow, the fake LLM).
"""

from __future__ import annotations

import subprocess
import sys

import tracejudge
from tracejudge.judges.model import JudgeResult
from tracejudge.verdict import GATE_JUDGE_NOT_RUN, build_verdict

GATE = {"enabled": True, "judges": ["coherence", "harmfulness"], "threshold": 0.5}


def cfg(rates: dict[str, float], judges=("coherence", "harmfulness")) -> dict:
    return {
        "observability": {"mlflow": {"judges": {"workflow_defaults": list(judges), "sampling": {"judges": rates}}}},
        "quality_gate": GATE,
    }


def test_background_verdicts_with_a_sampled_gating_judge_are_never_errors(worker, mlflow_store):
    from tracejudge.controls.sampling import judge_sampled
    from tracejudge.testing.workflows import record_plain_trace

    config = cfg({"harmfulness": 0.2})
    ids = [record_plain_trace(f"gate sampling {i}?", f"answer {i}") for i in range(12)]
    verdicts = [tracejudge.enqueue(t, config=config).verdict(timeout=90, raise_on_block=False) for t in ids]
    out = [v for v in verdicts if not judge_sampled(v.trace_id, "harmfulness", 0.2)]
    assert out, "the test needs traces whose gating judge was sampled out"
    for verdict in verdicts:
        assert verdict.status in ("passed", "failed"), (verdict.status, verdict.error)
        sampled_in = judge_sampled(verdict.trace_id, "harmfulness", 0.2)
        assert verdict.gate_judges_sampled_out == ([] if sampled_in else ["harmfulness"])
        assert ("harmfulness" in {r.name for r in verdict.results()}) == sampled_in
    # a gate request always runs every gating judge
    gate = tracejudge.enqueue(out[0].trace_id, config=config, gate=True).verdict(timeout=90, raise_on_block=False)
    assert "harmfulness" in {r.name for r in gate.results()} and gate.gate_judges_sampled_out == []


def test_every_gating_judge_sampled_out_is_skipped_not_error(worker, mlflow_store):
    from tracejudge.controls.sampling import judge_sampled
    from tracejudge.testing.workflows import record_plain_trace

    config = cfg({"coherence": 0.3, "harmfulness": 0.3}, judges=("coherence", "harmfulness", "relevance"))
    config["quality_gate"] = {**GATE, "judges": ["coherence", "harmfulness"]}
    ids = [record_plain_trace(f"all out {i}?", f"answer {i}") for i in range(40)]
    both_out = [t for t in ids if not judge_sampled(t, "coherence", 0.3) and not judge_sampled(t, "harmfulness", 0.3)][:2]
    assert both_out
    for trace_id in both_out:
        verdict = tracejudge.enqueue(trace_id, config=config).verdict(timeout=90, raise_on_block=False)
        assert verdict.status == "skipped" and verdict.error is None
        assert verdict.gate_judges_sampled_out == ["coherence", "harmfulness"]
        assert "sampled out" in verdict.skipped_reason
        assert [r.name for r in verdict.results()] == ["relevance"]  # the non-gating judge still ran and was recorded


def test_a_gating_judge_that_did_not_run_otherwise_is_still_an_error():
    r = [JudgeResult(name="coherence", target="workflow", score=0.9, threshold=0.5, passed=True)]
    from tracejudge.config import TraceJudgeConfig

    config = TraceJudgeConfig.model_validate({"quality_gate": GATE})
    assert build_verdict("tr-1", r, config).error.type == GATE_JUDGE_NOT_RUN
    assert build_verdict("tr-1", r, config, sampled_out=["harmfulness"]).status == "passed"


def test_validate_config_explains_sampling_a_gating_judge(tmp_path):
    import yaml

    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg({"harmfulness": 0.1})))
    out = subprocess.run([sys.executable, "-m", "tracejudge", "validate-config", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "harmfulness on 10% of traces" in out.stdout and "never 'error'" in out.stdout
