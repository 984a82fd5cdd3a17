"""Common failure themes: the most frequent distinctive phrases in failing rationales, per judge. No LLM.

A phrase (two or three words, stop words dropped) scores by how many traces' failing rationales of a judge contain
it, weighted by how rare it is among the other judges' (a tf-idf over judges). A trace counts once per judge, however
many of its nodes failed that judge with the same words.

>>> themes = failure_themes([
...     {"judge": "relevance", "trace_id": "t1", "text": "The answer misses the question asked."},
...     {"judge": "relevance", "trace_id": "t2", "text": "Off topic: misses the question entirely."},
...     {"judge": "coherence", "trace_id": "t3", "text": "Jumps between ideas."},
... ])
>>> themes[0].judge, themes[0].phrase, themes[0].count
('relevance', 'misses question', 2)
"""

from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from typing import Any, Iterable

from tracejudge.monitor.models import Theme

STOP = frozenset(
    """a an the and or but of to in on at for with by from as is are was were be been being it its this that these
    those there here not no nor so than too very can could should would will shall may might must do does did
    done has have had having i you he she we they them his her their our your my me us what which who whom whose
    when where why how all any both each few more most other some such only own same just also into over under
    again further then once about above below up down out off if while because until against between through
    during before after score scored scores response answer text output""".split()
)
WORD = re.compile(r"[a-z][a-z0-9'-]+")
PER_JUDGE = 3
#: The newest failing rationales read (a week of rollups keeps up to ~40,000; phrases settle long before that).
MAX_EXAMPLES = 5000


def _phrases(text: str) -> set[str]:
    words = [w for w in WORD.findall(text.lower()) if w not in STOP and len(w) > 2]
    grams = set()
    for n in (2, 3):
        for i in range(len(words) - n + 1):
            grams.add(" ".join(words[i : i + n]))
    return grams


def failure_themes(examples: Iterable[dict[str, Any]], *, per_judge: int = PER_JUDGE) -> list[Theme]:
    """Group failing rationales per judge by their most frequent distinctive phrases (at least two rationales)."""
    per_trace: dict[str, dict[str, set[str]]] = defaultdict(dict)  # judge -> trace -> phrases of its rationales
    seen: dict[str, set[str]] = {}
    taken = 0
    for example in examples:
        text = example.get("text") or ""
        if not text or example.get("error_code"):
            continue
        grams = seen.get(text)
        if grams is None:
            grams = seen[text] = _phrases(text)
        traces = per_trace[example["judge"]]
        traces[example["trace_id"]] = traces.get(example["trace_id"], set()) | grams
        taken += 1
        if taken >= MAX_EXAMPLES:
            break
    by_judge = {judge: list(traces.items()) for judge, traces in per_trace.items()}
    judge_df: dict[str, Counter[str]] = {}
    for judge, items in by_judge.items():
        df: Counter[str] = Counter()
        for _, grams in items:
            df.update(grams)
        judge_df[judge] = df
    themes: list[Theme] = []
    n_judges = len(judge_df)
    for judge, df in judge_df.items():
        spread = {p: sum(1 for other in judge_df.values() if p in other) for p in df}
        ranked = sorted(
            ((count * math.log(1 + n_judges / spread[p]), count, p) for p, count in df.items() if count >= 2),
            key=lambda t: (-t[0], -len(t[2]), t[2]),
        )
        chosen: list[str] = []
        for _, count, phrase in ranked:
            if any(phrase in c or c in phrase for c in chosen):
                continue
            chosen.append(phrase)
            examples_ = [tid for tid, grams in by_judge[judge] if phrase in grams][:5]
            themes.append(Theme(judge=judge, phrase=phrase, count=count, examples=examples_))
            if len(chosen) >= per_judge:
                break
    themes.sort(key=lambda t: (-t.count, t.judge, t.phrase))
    return themes
