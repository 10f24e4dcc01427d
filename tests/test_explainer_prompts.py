"""Prompts from real NYC samples never see the future; the explanation format and its parser."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)

from recpie.explainer.config import ExplainerConfig
from recpie.explainer.parse import format_explanation, parse
from recpie.explainer.prompts import build_prompt, context, usual_time

CFG = ExplainerConfig(history_len=6, num_candidates=3)
REPO = Path(__file__).resolve().parents[1]


def with_pois(data, idx: np.ndarray, pois: np.ndarray):
    poi = data.poi.copy()
    poi[idx] = pois
    return dataclasses.replace(data, poi=poi)


@pytest.mark.parametrize("split", ["train", "test"])
def test_prompt_is_blind_to_the_target_and_everything_after_it(nyc_data, split):
    d = nyc_data
    i = len(d.splits[split]) // 2
    target = d.splits[split].target[i]
    u = d.user[target]
    cands = [int(d.poi[target]), 1, 2]  # the target among the candidates, as a good recommender does
    prompt = build_prompt(d, split, i, cands, CFG)
    future = np.arange(target, d.user_start[u + 1])
    changed = with_pois(d, future, (d.poi[future] + 7) % d.num_pois)
    assert build_prompt(changed, split, i, cands, CFG) == prompt
    ctx = context(d, split, i, cands, CFG)
    assert (d.time[ctx.history] < d.time[target]).all() and len(ctx.shown) == 6
    # the prompt does react to the past: the last history check-in is shown
    past = ctx.history[-1:]
    moved = with_pois(d, past, (d.poi[past] + 7) % d.num_pois)
    assert build_prompt(moved, split, i, cands, CFG) != prompt


def test_prompt_shows_history_time_and_candidates(nyc_data):
    d = nyc_data
    cands = [5, 6, 7, 8]
    prompt = build_prompt(d, "test", 0, cands, CFG)
    assert prompt.endswith("Explanation: may like:") and prompt.startswith("Example.")
    body = prompt.split("\n\n", 1)[1]
    ctx = context(d, "test", 0, cands, CFG)
    for c in ctx.shown:
        assert d.catalogue.label(int(d.poi[c])) in body
    for p in cands[:3]:
        assert d.catalogue.label(p) in body
    assert d.catalogue.label(8) not in body.split("Candidates")[1]  # only num_candidates are listed
    assert "Now: " in body and body.count(" km") == 3
    # a candidate's visits over the whole history (beyond the shown window) are stated
    last = int(d.poi[ctx.history[-1]])
    n = int((d.poi[ctx.history] == last).sum())
    assert f"{n} earlier visit" in build_prompt(d, "test", 0, [last], CFG)


def test_candidate_focus_lists_that_candidate_alone(nyc_data):
    d = nyc_data
    prompt = build_prompt(d, "val", 3, [5, 6, 7], CFG, focus=6)
    listed = prompt.split("Candidates (distance from the last place):\n")[-1]
    assert d.catalogue.label(6) in listed and d.catalogue.label(5) not in listed
    with pytest.raises(ValueError, match="not a candidate of val:3"):
        build_prompt(d, "val", 3, [5, 6, 7], CFG, focus=99)


def test_parser_accepts_the_format_and_defines_every_failure():
    like, dislike = "Joe's Pizza, a lunch regular", "the far Bar at breakfast"
    good = parse(format_explanation(like, dislike) + "\nmore text")
    assert good.ok and good.like == like and good.dislike == dislike
    assert parse("May Like: coffee shops / MAY NOT LIKE: bars").ok
    for text, reason in [
        ("web page debris", "does not start"),
        ("may like: coffee near home", "no 'may not like:'"),
        ("may like: ... / may not like: bars", "empty 'may like'"),
        ("may like: coffee / may not like: ", "empty 'may not like'"),
        ("", "does not start"),
    ]:
        p = parse(text)
        assert not p.ok and p.like == p.dislike == "" and reason in p.reason


def test_usual_time_breaks_ties_by_the_most_recent_visit(nyc_data):
    hours = (nyc_data.local_seconds(np.arange(len(nyc_data.poi))) // 3600) % 24
    evening, morning = np.flatnonzero((hours >= 17) & (hours < 22))[:2], np.flatnonzero((hours >= 6) & (hours < 11))[:2]
    assert usual_time(nyc_data, np.array([morning[0], evening[0]])) == "evening"  # oldest first: the latest wins
    assert usual_time(nyc_data, np.array([evening[0], morning[0]])) == "morning"
    assert usual_time(nyc_data, np.array([evening[0], morning[0], evening[1]])) == "evening"  # no tie


PROMPTS_OF_A_PROCESS = r"""
import hashlib, sys
from recpie.data.config import DataConfig
from recpie.data.load import load_checkin_data
from recpie.explainer.config import ExplainerConfig
from recpie.explainer.prompts import build_prompt
data = load_checkin_data(DataConfig(source="foursquare", data_root=sys.argv[1], cache_dir=sys.argv[2]))
def places(i):  # candidates the user visited before: their prompt lines say when, usually
    return list(dict.fromkeys(data.poi[data.history("val", i)][::-1].tolist()))[:5]
prompts = [build_prompt(data, "val", i, places(i), ExplainerConfig()) for i in range(0, 1200, 4)]
print(hashlib.sha256("".join(prompts).encode()).hexdigest())
"""


def test_prompts_are_the_same_in_every_process(nyc_data, nyc_datamodule_config):
    """Python randomises string hashes per process: nothing in a prompt may depend on a set's order."""
    cfg = nyc_datamodule_config
    digests = {subprocess.run([sys.executable, "-c", PROMPTS_OF_A_PROCESS, cfg.data_root, cfg.cache_dir],
                              env={**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)},
                              capture_output=True, text=True, check=True).stdout for seed in ("1", "2")}
    assert len(digests) == 1
