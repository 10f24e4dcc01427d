"""Quality metrics on hand-made explanations about a real NYC sample: every count checked by hand."""
from __future__ import annotations

import json

import numpy as np
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)

from recpie.explainer.config import ExplainerConfig
from recpie.explainer.prompts import context
from recpie.explainer.quality import QualityScorer, distinct_n


def test_distinct_n_counts_unique_ngrams_over_the_set():
    assert distinct_n(["a b a", "a b"], 1) == 2 / 5
    assert distinct_n(["a b a", "a b"], 2) == 2 / 3
    assert distinct_n([""], 2) == 0.0


def test_grounding_hallucination_parse_and_jsonl(nyc_data, tmp_path):
    d = nyc_data
    cat = d.catalogue
    ctx = context(d, "test", 0, [5, 6], ExplainerConfig())
    named_hist = next(int(d.poi[c]) for c in ctx.history if len(cat.names[d.poi[c]]) >= 4)
    elsewhere = next(p for p in range(d.num_pois) if len(cat.names[p]) >= 4 and p not in ctx.candidates
                     and p not in d.poi[ctx.history] and cat.names[p] not in cat.category_names
                     and cat.category[p] not in cat.category[np.r_[d.poi[ctx.history], ctx.candidates]])
    grounded = f"may like: {cat.label(named_hist)} / may not like: {cat.label(5)}"
    invented = f"Zyxqv Imaginary Lounge ({cat.category_names[1]})"
    foreign = f"may like: {cat.names[elsewhere]} / may not like: {invented}"
    texts = [grounded, foreign, "web page debris"]
    q = QualityScorer(d)
    recs = [q.sample(t, ctx) for t in texts]
    assert recs[0]["grounded"] == recs[0]["mentions"] == 4  # two places, two categories
    assert recs[1]["hallucinated"] == ["Zyxqv Imaginary Lounge"] and recs[1]["grounded"] == 0
    assert recs[1]["places"] == [cat.names[elsewhere]]
    report = q.report(texts, [ctx] * 3, jsonl=tmp_path / "q.jsonl")
    assert report["parse_rate"] == 2 / 3 and report["n"] == 3
    assert report["hallucinated_name_rate"] == 1 / 4  # 3 known places + 1 unknown
    lines = [json.loads(x) for x in (tmp_path / "q.jsonl").read_text().splitlines()]
    assert [x["parsed"] for x in lines] == [True, True, False] and lines[2]["key"] == "test:0"
