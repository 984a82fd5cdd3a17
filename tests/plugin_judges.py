"""Judges a plugin package would ship (used by the entry-point test)."""

from tracejudge.judges import CodeJudge, Judge

JUDGES = [
    Judge(name="plugin_tone", prompt="Is the tone friendly?\n{output}"),
    CodeJudge(name="plugin_len", fn=lambda x: 1.0 if len(x.output_text) < 100 else 0.0),
]
