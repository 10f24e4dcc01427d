"""The information bound reads what the prompt states and nothing else: every feature of the facts reader
(FACTS_VERSION 3) is recomputed here from the rendered prompt text alone, on real NYC samples."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)
from test_explainer_warmup import counter_top

from recpie.explainer.config import ExplainerConfig
from recpie.explainer.information import FACTS, fact_vector, features, prompt_facts
from recpie.explainer.prompts import CandidateFacts, build_prompt

CFG = ExplainerConfig(history_len=5, num_candidates=5, few_shot=False)
LINE = re.compile(r"^(?P<rank>\d+)\. .*, (?P<km>\d+\.\d) km, (?:never visited|(?P<visits>\d+) earlier visits?, "
                  r"mostly (?P<usual>\w+))$")


def facts_from_text(prompt: str) -> list[CandidateFacts]:
    """What a reader of the prompt text alone knows about each candidate."""
    now = re.search(r"^Now: \w{3} \d\d:\d\d \((\w+)\)$", prompt, re.M)[1]
    listed = prompt.split("Candidates (distance from the last place):\n")[1].split("\nExplanation:")[0]
    out = []
    for line in listed.split("\n"):
        m = LINE.match(line)
        assert m, line
        out.append(CandidateFacts(int(m["rank"]), float(m["km"]), int(m["visits"] or 0), m["usual"] or "", now))
    return out


def test_every_fact_the_reader_uses_is_rendered_into_the_prompt(nyc_data):
    d = nyc_data
    # the parser above reads every field of the one list of prompt facts
    assert [f.name for f in dataclasses.fields(CandidateFacts)] == ["rank", "km", "visits", "usual", "now"]
    for split in ("val", "train"):
        rows = np.linspace(0, len(d.splits[split]) - 1, 60).astype(int)
        tops = counter_top(d, split, rows, CFG.num_candidates)
        facts = prompt_facts(d, split, rows, tops, CFG)
        assert facts.shape == (60, CFG.num_candidates, len(FACTS))
        from_text = np.array([[fact_vector(f) for f in facts_from_text(build_prompt(d, split, int(r), c, CFG))]
                              for r, c in zip(rows, tops, strict=True)], dtype=np.float32)
        np.testing.assert_array_equal(facts, from_text)
        assert facts[..., 0].max() > 0 and facts[..., 1].max() == 1  # real visits and usual parts were read
    # the bound's features: the rank one-hot and these facts, no logit unless asked for
    assert features(facts).shape == (60, CFG.num_candidates, CFG.num_candidates + len(FACTS))
    logits = np.random.default_rng(0).normal(size=(60, CFG.num_candidates)).astype(np.float32)
    assert features(facts, logits).shape[-1] == CFG.num_candidates + 1 + len(FACTS)
