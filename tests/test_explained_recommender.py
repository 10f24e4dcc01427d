"""The explanation-aware recommender on the synthetic check-ins (no shared data needed): each fusion head
starts as the backbone, an explanation moves exactly the logits its head is about, and the null
explanation's reward is 0."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from data_modules.batches import SampleDataset, to_tensors
from recpie.components.backbone import Backbone
from recpie.components.explained_recommender import CandidateFusion, ExplainedRecommender, UserFusion, VerdictFusion
from recpie.config import load_experiment

K, DIM = 3, 4
HEADS = {"user": ("user", False, DIM), "candidate": ("candidate", False, DIM), "verdict": ("user", True, 2 * K)}


@pytest.fixture(scope="module")
def batch(synthetic_data):
    rows = SampleDataset(synthetic_data, "val", 12, True).__getitems__(list(range(0, 12, 2)))
    return to_tensors(rows)


def recommender(synthetic_data, head: str) -> ExplainedRecommender:
    torch.manual_seed(0)
    cfg = load_experiment("nyc_recpie", ["backbone.hidden_size=16", "backbone.num_heads=1", "backbone.num_layers=1"])
    backbone = Backbone(cfg.backbone, synthetic_data, 12)
    granularity, verdicts, dim = HEADS[head]
    return ExplainedRecommender.build(backbone, granularity, verdicts, dim, K, gate_bias=-2.0).eval()


def randomise(module: nn.Module) -> None:
    """Weights away from the identity start, so that a head has a say."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)


@pytest.mark.parametrize("head", list(HEADS))
def test_a_new_head_with_the_null_explanation_scores_as_the_backbone(synthetic_data, batch, head):
    rec = recommender(synthetic_data, head)
    assert type(rec.fusion) is {"user": UserFusion, "candidate": CandidateFusion, "verdict": VerdictFusion}[head]
    assert rec.slots == (K if head == "candidate" else 1) and rec.reranks == (head != "user")
    with rec.predicting():
        h = rec.user_state(batch)
        plain = rec.backbone.score(h, batch)
        candidates = rec.candidates(batch, h)
        z, present = rec.null_explanations(h)
        fused = rec.fuse(batch, h, z, present, candidates)
    assert z.shape == (len(h), rec.slots, HEADS[head][2]) and not present.any()
    torch.testing.assert_close(fused.logits, plain, rtol=0, atol=0)
    assert torch.equal(candidates, plain.topk(K, -1).indices)
    if head == "user":
        assert fused.diagnostics["fusion/gate_mean"].item() == pytest.approx(torch.sigmoid(torch.tensor(-2.0)).item())


@pytest.mark.parametrize("head", list(HEADS))
def test_an_explanation_moves_the_logits_its_head_is_about(synthetic_data, batch, head):
    rec = recommender(synthetic_data, head)
    randomise(rec.fusion)
    with rec.predicting():
        h = rec.user_state(batch)
        candidates = rec.candidates(batch, h)
        z, present = rec.null_explanations(h)
        null = rec.logits(batch, h, z, present, candidates)
        z[0, 0], present[0, 0] = 1.0, True  # sample 0, slot 0: the first candidate's (candidate) or the sample's
        moved = rec.logits(batch, h, z, present, candidates) != null
    assert not moved[1:].any()  # the other samples keep their scores
    if head == "user":
        assert moved[0].all()  # a refined user state moves every POI's score
    else:
        about = candidates[0, :1] if head == "candidate" else candidates[0]
        assert set(moved[0].nonzero().squeeze(1).tolist()) == set(about.tolist())


@pytest.mark.parametrize("head", list(HEADS))
def test_the_null_explanation_gains_nothing_and_another_gains_its_log_likelihood(synthetic_data, batch, head):
    rec = recommender(synthetic_data, head)
    randomise(rec.fusion)
    rec.train()
    with rec.predicting():
        h = rec.user_state(batch)
        candidates = rec.candidates(batch, h)
    rows, slot = torch.arange(len(h)), torch.zeros(len(h), dtype=torch.long)
    null = rec.fusion.null.detach().repeat(K if head == "verdict" else 1)  # the verdict head's null: per candidate
    gain, null_lp, with_lp = rec.log_likelihood_gain(batch, h, candidates, rows, slot, null.expand(len(h), -1))
    assert rec.training and rec.backbone.training  # the context restores the mode
    assert gain.abs().max() == 0 and (null_lp < 0).all()
    ones = torch.ones(len(h), null.numel())
    gain, null_lp2, with_lp = rec.log_likelihood_gain(batch, h, candidates, rows, slot, ones)
    torch.testing.assert_close(null_lp2, null_lp)
    torch.testing.assert_close(gain, with_lp - null_lp)
    assert gain.abs().max() > 1e-4 and not gain.requires_grad


def test_the_verdict_head_reports_its_trust_in_may_like(synthetic_data, batch):
    rec = recommender(synthetic_data, "verdict")
    randomise(rec.fusion)
    with rec.predicting():
        h = rec.user_state(batch)
        candidates = rec.candidates(batch, h)
        z, present = rec.null_explanations(h)
        z[:, 0, 0], present[:] = 1.0, True  # every sample likes its first candidate, names no other
        _, bonus = rec.fusion(rec.backbone.score(h, batch), h, candidates, z.view(len(h), K, 2), present.expand(-1, K))
        trust = rec.fuse(batch, h, z, present, candidates).diagnostics["fusion/liked_bonus"]
    torch.testing.assert_close(trust, bonus[:, 0].mean() - bonus[:, 1:].mean())
