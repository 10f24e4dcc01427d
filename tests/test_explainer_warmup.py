"""Warm-up targets are grounded, parseable and blind to the target; SFT teaches the tiny model the format."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)
from test_explainer_llm import tiny_cfg
from tiny_llm import tiny_llm_dir  # noqa: F401  (fixture)

from recpie.components.baselines import DecayedCounter
from recpie.explainer.config import ExplainerConfig
from recpie.explainer.explainer import Explainer
from recpie.explainer.parse import parse
from recpie.explainer.prompts import build_prompt, context
from recpie.explainer.quality import QualityScorer
from recpie.explainer.warmup import sft_losses, templated_explanation


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
