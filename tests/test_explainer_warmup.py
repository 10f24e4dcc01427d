"""Warm-up targets are grounded, parseable and blind to the target; the facts teacher reads the prompt alone;
SFT teaches the tiny model the format and weights the chosen names."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)
from test_explainer_llm import tiny_cfg
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)

from recpie.components.backbone import Backbone
from recpie.components.baselines import DecayedCounter
from recpie.config import load_experiment
from recpie.explainer.config import ExplainerConfig
from recpie.explainer.explainer import Explainer
from recpie.explainer.information import features, prompt_facts
from recpie.explainer.parse import parse
from recpie.explainer.prompts import build_prompt, context
from recpie.explainer.quality import QualityScorer
from recpie.explainer.warmup import FactsTeacher, sft_losses, templated_choice, templated_explanation


def counter_top(data, split: str, rows: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-DecayedCounter(0.99).fit(data).score(data, split, rows), 1)[:, :k]


@pytest.mark.parametrize("split", ["train", "test"])
def test_templates_parse_are_grounded_and_blind_to_the_target(nyc_data, split):
    d = nyc_data
    rows = np.linspace(0, len(d.splits[split]) - 1, 150).astype(int)
    tops = counter_top(d, split, rows, 5)
    cfg = ExplainerConfig()
    texts, ctxs = [], []
    for r, c in zip(rows, tops, strict=True):
        texts += [templated_explanation(d, split, int(r), c, cfg)]
        texts += [templated_explanation(d, split, int(r), c, cfg, focus=int(p)) for p in c]
        ctxs += [context(d, split, int(r), c, cfg)] * 6
    assert all(parse(t).ok for t in texts)
    q = QualityScorer(d).report(texts, ctxs)
    assert q["grounding"] == 1.0 and q["hallucinated_name_rate"] == 0.0
    # blind to the target: rewrite the target and everything after it
    r, c = int(rows[75]), tops[75]
    target = d.splits[split].target[r]
    future = np.arange(target, d.user_start[d.user[target] + 1])
    poi = d.poi.copy()
    poi[future] = (poi[future] + 11) % d.num_pois
    changed = dataclasses.replace(d, poi=poi)
    assert templated_explanation(changed, split, r, c, cfg) == templated_explanation(d, split, r, c, cfg)


def test_hindsight_template_likes_the_given_candidate_and_dislikes_another(nyc_data):
    d, cfg = nyc_data, ExplainerConfig()
    rows = np.linspace(0, len(d.splits["train"]) - 1, 40).astype(int)
    for r, c in zip(rows, counter_top(d, "train", rows, 5), strict=True):
        for like in c:
            p = parse(templated_explanation(d, "train", int(r), c, cfg, like=int(like)))
            assert p.ok and p.like.startswith(d.catalogue.label(int(like)))
            others = {d.catalogue.label(int(q)) for q in c if q != like}
            assert any(p.dislike.startswith(lab) for lab in others)
    r, c = int(rows[0]), counter_top(d, "train", rows[:1], 5)[0]
    assert templated_explanation(d, "train", r, c, cfg, like=int(c[0])) == templated_explanation(d, "train", r, c, cfg)


@pytest.mark.slow
def test_sft_loss_trains_lora_and_soft_prompt_on_real_prompts(nyc_data, tiny_llm_dir):  # noqa: F811
    d = nyc_data
    cfg = tiny_cfg(tiny_llm_dir, history_len=2, num_candidates=2, few_shot=False, vocabulary="data")
    torch.manual_seed(0)
    ex = Explainer(cfg, user_dim=8, data=d)  # the head over the data's tokens, as the default config has it
    rows = np.arange(2)
    tops = counter_top(d, "train", rows, 2)
    prompts = [build_prompt(d, "train", int(r), c, cfg) for r, c in zip(rows, tops, strict=True)]
    targets = [templated_explanation(d, "train", int(r), c, cfg) for r, c in zip(rows, tops, strict=True)]
    h = torch.randn(2, 8)
    soft_before = [p.detach().clone() for p in ex.soft_prompt.parameters()]
    opt, losses = torch.optim.AdamW(ex.trainable_parameters(), lr=1e-2), []
    for _ in range(30):  # the steps ExplainerTrainer.format_warmup takes (the one warm-up loop), on fixed rows
        loss = sum(sft_losses(ex, prompts, targets, h))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    assert all(not torch.equal(a, b) for a, b in zip(soft_before, ex.soft_prompt.parameters(), strict=True))
    # the loss is the response NLL given the prompt: a wrong prompt makes the targets less likely
    with torch.no_grad():
        right = sum(sft_losses(ex, prompts, targets, h))
        swapped = sum(sft_losses(ex, prompts[::-1], targets, h))
    assert right < swapped


def test_warmup_micro_batches_sum_to_the_whole_batch_loss_and_gradient(nyc_data, tiny_llm_dir):  # noqa: F811
    d = nyc_data
    cfg = tiny_cfg(tiny_llm_dir, history_len=3, num_candidates=2)
    torch.manual_seed(0)
    ex = Explainer(cfg, user_dim=8)
    rows = np.arange(5)
    tops = counter_top(d, "train", rows, 2)
    prompts = [build_prompt(d, "train", int(r), c, cfg) for r, c in zip(rows, tops, strict=True)]
    targets = [templated_explanation(d, "train", int(r), c, cfg) for r, c in zip(rows, tops, strict=True)]
    h = torch.randn(5, 8)
    results = []
    for tokens in (10**6, 1):  # one part; one row per part
        ex.cfg.forward_tokens = tokens
        parts = list(sft_losses(ex, prompts, targets, h))
        grads = torch.autograd.grad(sum(parts), ex.trainable_parameters())
        results.append((len(parts), sum(parts).detach(), grads))
    assert [r[0] for r in results] == [1, 5]
    torch.testing.assert_close(results[1][1], results[0][1], atol=1e-4, rtol=1e-4)  # padding: float rounding
    for a, b in zip(results[1][2], results[0][2], strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-3)


def test_the_data_vocabulary_covers_templates_of_unseen_samples_and_needs_the_data(nyc_data, tiny_llm_dir):  # noqa: F811
    d = nyc_data
    cfg = tiny_cfg(tiny_llm_dir, history_len=2, num_candidates=2, vocabulary="data")
    with pytest.raises(ValueError, match="explainer.vocabulary=data"):
        Explainer(cfg, user_dim=8)
    ex = Explainer(cfg, user_dim=8, data=d)
    ids = ex.head.ids
    assert torch.equal(ids, ids.unique()) and ex.tokenizer.eos_token_id in ids.tolist()
    rows = np.arange(500, 540)  # other samples than most of those the vocabulary was built from
    tops = counter_top(d, "val", rows, 2)
    texts = [templated_explanation(d, "val", int(r), c, cfg) for r, c in zip(rows, tops, strict=True)]
    tokens = torch.tensor([t for x in texts for t in ex.tokenizer(x, add_special_tokens=False).input_ids])
    assert ex.head.contains(tokens).float().mean() > 0.99


def test_the_facts_teachers_choice_is_a_function_of_the_prompt_alone(nyc_data):
    """FactsTeacher (fitted on val with a backbone's top-K) names, for a train sample, its best and lowest
    candidate from the prompt: rewriting the sample's target and everything after it leaves them unchanged."""
    d = nyc_data
    cfg = load_experiment("nyc_recpie", ["backbone.hidden_size=16", "backbone.num_heads=1", "backbone.num_layers=1",
                                         "explainer.num_candidates=5", "data.max_len=12"])
    torch.manual_seed(0)
    backbone = Backbone(cfg.backbone, d, cfg.data.max_len)
    teacher = FactsTeacher.fit(backbone, d, cfg)
    assert backbone.training  # the teacher's top-K pass leaves the backbone's mode alone
    assert teacher.val_fitted > 100
    rows = np.linspace(0, len(d.splits["train"]) - 1, 60).astype(int)
    tops = counter_top(d, "train", rows, 5)
    like, dislike = teacher.choice(d, "train", rows, tops, cfg.explainer)
    assert all(a in c and b in c and a != b for a, b, c in zip(like, dislike, tops.tolist(), strict=True))
    assert 0 < np.mean(np.array(like) != tops[:, 0]) < 1  # a reader, not the ranking: it disagrees sometimes
    order = teacher.order(d, "train", rows, tops, cfg.explainer)
    scores = teacher.reader(features(prompt_facts(d, "train", rows, tops, cfg.explainer))).squeeze(-1)
    assert (np.take_along_axis(scores.detach().numpy(), order, 1)[:, :-1]
            >= np.take_along_axis(scores.detach().numpy(), order, 1)[:, 1:]).all()
    targets = d.splits["train"].target[rows]
    poi = d.poi.copy()
    for t in targets:  # the target and everything after it, rewritten
        future = np.arange(t, d.user_start[d.user[t] + 1])
        poi[future] = (poi[future] + 11) % d.num_pois
    changed = dataclasses.replace(d, poi=poi)
    assert (changed.poi[targets] != d.poi[targets]).all()
    assert teacher.choice(changed, "train", rows, tops, cfg.explainer) == (like, dislike)
    # its warm-up target names those two, with reasons the prompt states
    r, c = int(rows[0]), tops[0]
    t = templated_choice(d, "train", r, c, cfg.explainer, like=like[0], dislike=dislike[0])
    p = parse(t.text)
    assert p.ok and t.names == [d.catalogue.label(like[0]), d.catalogue.label(dislike[0])]
    assert p.like.startswith(t.names[0]) and p.dislike.startswith(t.names[1])


def test_the_choice_weight_lands_on_the_name_tokens(nyc_data, tiny_llm_dir):  # noqa: F811
    """sft_losses with recpie.sft_choice_weight: the loss equals, by hand on the tiny model, the mean of the
    per-token NLL weighted 1 + w on the tokens that spell the chosen names (found by decoding), 1 elsewhere."""
    d = nyc_data
    cfg = tiny_cfg(tiny_llm_dir, history_len=2, num_candidates=3, few_shot=False)
    torch.manual_seed(0)
    ex = Explainer(cfg, user_dim=8)
    rows = np.arange(2)
    tops = counter_top(d, "train", rows, 3)
    prompts = [build_prompt(d, "train", int(r), c, cfg) for r, c in zip(rows, tops, strict=True)]
    chosen = [templated_choice(d, "train", int(r), c, cfg, like=int(c[1])) for r, c in zip(rows, tops, strict=True)]
    texts, names = [t.text for t in chosen], [t.names for t in chosen]
    tok, w = ex.tokenizer, 3.0
    nll, weight = [], []
    for prompt, text, pair in zip(prompts, texts, names, strict=True):
        body = text[len("may like:"):]
        ids = tok(body, add_special_tokens=False).input_ids
        p = tok(prompt).input_ids
        with torch.no_grad():
            logp = ex.model(input_ids=torch.tensor([p + ids + [tok.eos_token_id]])).logits[0].float().log_softmax(-1)
        nll += [-logp[len(p) - 1 + t, token].item() for t, token in enumerate(ids + [tok.eos_token_id])]
        spans, cursor = [], 0
        for name in pair:
            cursor = body.index(name, cursor)
            spans.append((cursor, cursor + len(name)))
            cursor += len(name)
        ends = [len(tok.decode(ids[:t + 1])) for t in range(len(ids))]  # each token's span by decoding
        starts = [0, *ends[:-1]]
        weight += [1 + w * any(a < e and b > s for s, e in spans) for a, b in zip(starts, ends, strict=True)] + [1]
    nll, weight = torch.tensor(nll), torch.tensor(weight)
    assert 0 < (weight > 1).sum() < len(weight) / 2
    with torch.no_grad():
        plain = sum(sft_losses(ex, prompts, texts, None))
        weighted = sum(sft_losses(ex, prompts, texts, None, names, w))
        unweighted = sum(sft_losses(ex, prompts, texts, None, names, 0.0))
    assert abs(plain.item() - nll.mean().item()) < 1e-4 and unweighted.item() == plain.item()
    assert abs(weighted.item() - (weight * nll).sum().item() / weight.sum().item()) < 1e-4
    assert abs(weighted.item() - plain.item()) > 1e-3
