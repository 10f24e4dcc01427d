"""The information bound reads what the prompt states and nothing else: every feature of the facts reader
(FACTS_VERSION 3, and "3+scores" with explainer.show_scores) is recomputed here from the rendered prompt text
alone, on real NYC samples."""
from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)
from test_explainer_warmup import counter_top

from recpie.explainer.config import ExplainerConfig
from recpie.explainer.information import FACTS, fact_names, fact_vector, features, prompt_facts
from recpie.explainer.prompts import CandidateFacts, build_prompt

CFG = ExplainerConfig(history_len=5, num_candidates=5, few_shot=False)
LINE = re.compile(r"^(?P<rank>\d+)\. .*, (?P<km>\d+\.\d) km, (?:never visited|(?P<visits>\d+) earlier visits?, "
                  r"mostly (?P<usual>\w+)(?:, (?P<match>as now|not now))?)"
                  r"(?:, recommender (?:<0\.01|(?P<share>\d+(?:\.\d+)?))%)?$")


def facts_from_text(prompt: str) -> list[CandidateFacts]:
    """What a reader of the prompt text alone knows about each candidate (with explainer.show_scores the
    header names the recommender's share and every line ends in it; "<0.01%" is a share of 0; with
    explainer.habit_match a visited candidate's line says whether its usual part is now's, which must agree
    with the "Now:" line)."""
    now = re.search(r"^Now: \w{3} \d\d:\d\d \((\w+)\)$", prompt, re.M)[1]
    head = re.search(r"^Candidates \(distance from the last place(; the recommender's share among them)?\):\n",
                     prompt, re.M)
    listed = prompt[head.end():].split("\nExplanation:")[0]
    out = []
    for line in listed.split("\n"):
        m = LINE.match(line)
        assert m, line
        assert line.endswith("%") == bool(head[1]), line  # a score on every line exactly when the header says so
        share = None if not head[1] else float(m["share"] or 0)
        if m["match"]:
            assert (m["match"] == "as now") == (m["usual"] == now), line
        out.append(CandidateFacts(int(m["rank"]), float(m["km"]), int(m["visits"] or 0), m["usual"] or "", now,
                                  share, m["match"] is not None))
    return out


def scores_of(rows: np.ndarray, k: int) -> np.ndarray:
    """Logits [n, k] in descending order, spread like a recommender's (some shares print as "<0.01%")."""
    return np.sort(np.random.default_rng(0).normal(0.0, 4.0, (len(rows), k)), 1)[:, ::-1].astype(np.float32)


@pytest.mark.parametrize(("show_scores", "habit_match"), [(False, False), (True, False), (True, True)])
def test_every_fact_the_reader_uses_is_rendered_into_the_prompt(nyc_data, show_scores, habit_match):
    d, cfg = nyc_data, dataclasses.replace(CFG, show_scores=show_scores, habit_match=habit_match)
    names = fact_names(cfg)
    assert names == FACTS + (["log printed recommender share"] if show_scores else [])
    # the parser above reads every field of the one list of prompt facts
    assert [f.name for f in dataclasses.fields(CandidateFacts)] == ["rank", "km", "visits", "usual", "now", "share",
                                                                    "match"]
    for split in ("val", "train"):
        rows = np.linspace(0, len(d.splits[split]) - 1, 60).astype(int)
        tops = counter_top(d, split, rows, cfg.num_candidates)
        logits = scores_of(rows, cfg.num_candidates)
        facts = prompt_facts(d, split, rows, tops, cfg, logits)
        assert facts.shape == (60, cfg.num_candidates, len(names))
        parsed = [facts_from_text(build_prompt(d, split, int(r), c, cfg, logits=z))
                  for r, c, z in zip(rows, tops, logits, strict=True)]
        from_text = np.array([[fact_vector(f) for f in row] for row in parsed], dtype=np.float32)
        np.testing.assert_array_equal(facts, from_text)
        # the match is stated on every visited line exactly when asked for; the reader's facts are the same
        assert all(f.match == (habit_match and f.visits > 0) for row in parsed for f in row)
        assert habit_match <= any(f.match and f.usual != f.now for row in parsed for f in row)  # "not now" read too
        np.testing.assert_array_equal(facts, prompt_facts(d, split, rows, tops, dataclasses.replace(
            cfg, habit_match=not habit_match), logits))
        assert facts[..., 0].max() > 0 and facts[..., 1].max() == 1  # real visits and usual parts were read
        if show_scores:  # the printed share: the softmax of the K logits in percent to two significant digits
            shares = np.array([[f.share for f in row] for row in parsed])
            p = np.exp(logits.astype(np.float64) - logits.max(1, keepdims=True))
            exact = 100 * p / p.sum(1, keepdims=True)
            below = exact < 0.01  # printed "<0.01%", read as 0.005%
            assert (shares[below] == 0).all() and below.any() and (shares[~below] > 0).all()
            digit = 10.0 ** (np.floor(np.log10(exact[~below])) - 1)  # the second significant digit's unit
            assert (np.abs(shares[~below] - exact[~below]) <= 0.5 * digit * (1 + 1e-6)).all()
            assert (shares < 1).any() and (shares >= 50).any()
            np.testing.assert_allclose(facts[..., -1], np.log(np.maximum(shares, 0.005) / 100), rtol=1e-6)
        else:
            assert all(f.share is None for row in parsed for f in row)  # no score printed, none read
            np.testing.assert_array_equal(facts, prompt_facts(d, split, rows, tops, cfg))  # the logits unread
    # the bound's features: the rank one-hot and these facts, no logit unless asked for
    assert features(facts).shape == (60, cfg.num_candidates, cfg.num_candidates + len(names))
    assert features(facts, logits).shape[-1] == cfg.num_candidates + 1 + len(names)


def test_a_prompt_with_scores_needs_the_logits(nyc_data):
    cfg = dataclasses.replace(CFG, show_scores=True)
    with pytest.raises(ValueError, match="needs the candidates' logits"):
        build_prompt(nyc_data, "test", 3, [5, 6, 7, 8, 9], cfg)
    with pytest.raises(ValueError, match="3 logits for 5 candidates"):
        build_prompt(nyc_data, "test", 3, [5, 6, 7, 8, 9], cfg, logits=[1.0, 0.0, -1.0])
