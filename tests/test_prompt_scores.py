"""explainer.show_scores: the prompt states each candidate's share of the recommender's probability among the
K. Without it every prompt, templated explanation, data vocabulary and cache key is what it was before the
key existed; with it the facts teacher reads the printed share and nothing beyond the prompt, the store
re-explains a sample whose printed shares moved, and a study's bound records another facts version."""
from __future__ import annotations

import dataclasses
import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)
from omegaconf import OmegaConf
from test_explainer_warmup import counter_top

from recpie.components.backbone import Backbone
from recpie.config import load_experiment
from recpie.errors import ConfigError
from recpie.explainer.config import ExplainerConfig
from recpie.explainer.information import FACTS, FACTS_VERSION, facts_version, features, prompt_facts
from recpie.explainer.prompts import build_prompt, share_text, shares
from recpie.explainer.store import ExplanationStore
from recpie.explainer.vocabulary import vocabulary_texts
from recpie.explainer.warmup import FactsTeacher, templated_explanation
from recpie.explainer.writer import ExplanationWriter
from recpie.utils.run_folder import config_fingerprint

SECTIONS = ("data", "backbone", "explainer", "rl", "recpie")
# sha256 of the texts below and of the data vocabulary, as written before explainer.show_scores existed (625f4d2)
BEFORE = "c4609a8048fda8d756dac4666b9967ffa6f5a3e9eb4b0a620515fd0f79944597"
VOCABULARY_BEFORE = "7d18e397340510ea2e74e003cb0738dbfda4f825efdcec83312b5bb43c8a3c11"


def texts_of(d, logits: bool) -> list[str]:
    """Prompts (whole and one candidate's), templated explanations of real val and test samples under two
    configs without scores; ``logits``: pass made-up logits too (a config without scores ignores them)."""
    texts = []
    for split in ("val", "test"):
        rows = np.linspace(0, len(d.splits[split]) - 1, 12).astype(int)
        tops = counter_top(d, split, rows, 5)
        z = np.random.default_rng(1).normal(0.0, 3.0, tops.shape) if logits else [None] * len(rows)
        for cfg in (ExplainerConfig(), ExplainerConfig(history_len=5, few_shot=False, num_candidates=4)):
            for r, c, row in zip(rows, tops, z, strict=True):
                texts.append(build_prompt(d, split, int(r), c, cfg, logits=row))
                texts.append(build_prompt(d, split, int(r), c, cfg, focus=int(c[1]), logits=row))
                texts.append(templated_explanation(d, split, int(r), c, cfg, logits=row))
    return texts


def digest(texts: list[str]) -> str:
    return hashlib.sha256("\x00".join(texts).encode()).hexdigest()


@pytest.mark.parametrize("logits", [False, True])
def test_without_scores_prompts_and_the_vocabulary_are_byte_for_byte_as_before(nyc_data, logits):
    texts = texts_of(nyc_data, logits)
    assert len(texts) == 144 and "recommender" not in "".join(texts)
    assert digest(texts) == BEFORE, "a prompt without scores changed: bump FACTS_VERSION, or undo the change"
    assert digest(vocabulary_texts(nyc_data, ExplainerConfig(), samples=32)) == VOCABULARY_BEFORE


def test_cache_keys_stay_without_scores_and_move_with_them(nyc_data):
    """The disk cache's key is the run tag (name, seed, config fingerprint) and the prompt's digest: without
    scores both are as before the key existed (an old run's explanations are found again); with scores
    both differ (no explanation of a prompt without scores is served)."""
    cfg = load_experiment("nyc_recpie")
    assert cfg.explainer.show_scores is False
    older = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    del older["explainer"]["show_scores"]  # a config of before the key
    plain = config_fingerprint(cfg, SECTIONS)
    assert plain == config_fingerprint(OmegaConf.create(older), SECTIONS)
    scored_cfg = load_experiment("nyc_recpie", ["explainer.show_scores=true"])
    assert config_fingerprint(scored_cfg, SECTIONS) != plain
    c, z = [5, 6, 7, 8, 9], [2.0, 1.0, 0.0, -1.0, -4.0]
    key = ExplanationWriter.cache_key  # f"{cache_tag}/{split}/{i}/{slot}/{prompt digest}"
    prompt = build_prompt(nyc_data, "test", 4, c, cfg.explainer, logits=z)
    assert prompt == build_prompt(nyc_data, "test", 4, c, cfg.explainer)
    scored = build_prompt(nyc_data, "test", 4, c, scored_cfg.explainer, logits=z)
    tag = SimpleNamespace(cache_tag="run")
    assert key(tag, "test", 4, 0, prompt).split("/")[-1] != key(tag, "test", 4, 0, scored).split("/")[-1]


def test_the_printed_share_and_the_facts_version():
    assert shares([3.0, 2.5, 1.0, -2.0, -3.0]) == (57.0, 35.0, 7.7, 0.38, 0.14)
    assert shares([12.0, 0.0, 0.5]) == (100.0, 0.0, 0.0)  # below 0.01%: "<0.01%"
    assert shares([0.0, 0.0, 0.0, 0.0]) == (25.0,) * 4
    assert [share_text(s) for s in (57.0, 7.7, 0.081, 100.0, 0.0)] == ["57%", "7.7%", "0.081%", "100%", "<0.01%"]
    # a bound of prompts without scores keeps the plain version (saved study points stay valid); with them
    # another one, so a point never mixes the two
    assert facts_version(ExplainerConfig()) == FACTS_VERSION == 3
    assert facts_version(ExplainerConfig(show_scores=True)) == "3+scores"


def test_show_scores_is_a_checked_key_and_the_low_fraction_configs_set_it():
    with pytest.raises(ConfigError, match="show_scores"):
        load_experiment("nyc_recpie", ["explainer.show_scores=maybe"])
    for name in ("nyc_recpie_3pct", "nyc_recpie_12pct", "nyc_recpie_3pct_frozen", "nyc_recpie_12pct_frozen"):
        assert load_experiment(name).explainer.show_scores is True, name
    assert load_experiment("default").explainer.show_scores is False


def test_the_store_re_explains_a_sample_whose_printed_share_moved():
    store = ExplanationStore({"test": 3}, slots=1, dim=2)
    cands, logits = [[4, 5, 6], [7, 8, 9]], [[2.0, 1.0, 0.0], [1.0, 0.0, -1.0]]
    store.put("test", torch.tensor([0, 1]), torch.ones(2, 1, 2), [["a"], ["b"]], version=1, candidates=cands,
              logits=logits)
    ids, shown = torch.tensor([0, 1]), torch.tensor(cands)
    assert store.missing("test", ids, 1, shown, torch.tensor(logits)).tolist() == []
    # a move that no printed share shows (a shift of every logit, a change below the second digit) is no move
    same = torch.tensor([[3.0, 2.0, 1.0], [1.0001, 0.0, -1.0]])
    assert store.missing("test", ids, 1, shown, same).tolist() == []
    moved = torch.tensor([[2.0, 1.5, 0.0], [1.0, 0.0, -1.0]])
    assert store.missing("test", ids, 1, shown, moved).tolist() == [0]
    assert store.missing("test", ids, 1, shown).tolist() == []  # without scores the logits are not read
    # the logits travel with the checkpoint; a store saved before they were kept loads with none
    state = store.state_dict()
    assert state["logits"]["test"] == {0: logits[0], 1: logits[1]}
    old = ExplanationStore({"test": 3}, slots=1, dim=2)
    old.load_state_dict({k: v for k, v in state.items() if k != "logits"})
    assert old.logits == {"test": {}} and old.missing("test", ids, 1, shown, same).tolist() == [0, 1]


def test_the_facts_teacher_with_scores_reads_the_printed_share_and_nothing_beyond_the_prompt(nyc_data):
    """FactsTeacher with explainer.show_scores: the bound's features gain the printed share, its choice for a
    train sample follows the shares it is shown, and rewriting the target and everything after it (nothing
    a prompt shows) leaves the choice unchanged."""
    d = nyc_data
    cfg = load_experiment("nyc_recpie", ["backbone.hidden_size=16", "backbone.num_heads=1", "backbone.num_layers=1",
                                         "explainer.num_candidates=5", "data.max_len=12", "explainer.show_scores=true"])
    torch.manual_seed(0)
    teacher = FactsTeacher.fit(Backbone(cfg.backbone, d, cfg.data.max_len), d, cfg)
    assert teacher.reader.weight.shape[-1] == 5 + len(FACTS) + 1  # rank one-hot, the facts, the printed share
    assert teacher.reader.weight[0, -1].item() != 0
    rows = np.linspace(0, len(d.splits["train"]) - 1, 60).astype(int)
    tops = counter_top(d, "train", rows, 5)
    logits = np.sort(np.random.default_rng(0).normal(0.0, 2.0, tops.shape), 1)[:, ::-1].astype(np.float32)
    choice = teacher.choice(d, "train", rows, tops, cfg.explainer, logits)
    with pytest.raises(ValueError, match="needs the candidates' logits"):
        teacher.choice(d, "train", rows, tops, cfg.explainer)
    scores = teacher.reader(features(prompt_facts(d, "train", rows, tops, cfg.explainer, logits))).squeeze(-1)
    assert choice[0] == tops[np.arange(60), scores.detach().numpy().argmax(1)].tolist()
    flat = np.zeros_like(logits)  # the same candidates shown with equal shares: another choice somewhere
    assert teacher.choice(d, "train", rows, tops, cfg.explainer, flat) != choice
    targets = d.splits["train"].target[rows]
    poi = d.poi.copy()
    for t in targets:
        future = np.arange(t, d.user_start[d.user[t] + 1])
        poi[future] = (poi[future] + 11) % d.num_pois
    changed = dataclasses.replace(d, poi=poi)
    assert (changed.poi[targets] != d.poi[targets]).all()
    assert teacher.choice(changed, "train", rows, tops, cfg.explainer, logits) == choice
