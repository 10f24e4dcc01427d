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
from recpie.evaluation.ranking import ranks_from_scores

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
    """Weights away from the identity start, so that a head has a say (a fitted head's are buffers)."""
    with torch.no_grad():
        for p in [*module.parameters(), *module.buffers()]:
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
        changed = set(moved[0].nonzero().squeeze(1).tolist())
        if head == "verdict":  # the K bonuses are lowered by their smallest: that candidate may keep its score
            assert len(changed) >= K - 1 and changed <= set(about.tolist())
        else:
            assert changed == set(about.tolist())


@pytest.mark.parametrize("head", list(HEADS))
def test_the_null_explanation_gains_nothing_and_another_gains_its_log_likelihood(synthetic_data, batch, head):
    rec = recommender(synthetic_data, head)
    randomise(rec.fusion)
    rec.train()
    with rec.predicting():
        h = rec.user_state(batch)
        candidates = rec.candidates(batch, h)
    rows, slot = torch.arange(len(h)), torch.zeros(len(h), dtype=torch.long)
    if head == "verdict":  # no null vector: a verdict gains nothing on the unfitted head (the identity)
        null, fusion = torch.ones(K * 2), rec.fusion
        rec.fusion = recommender(synthetic_data, head).fusion
    else:
        null, fusion = rec.fusion.null.detach(), rec.fusion
    gain, null_lp, with_lp = rec.target_gain(batch, h, candidates, rows, slot, null.expand(len(h), -1))
    rec.fusion = fusion
    assert rec.training and rec.backbone.training  # the context restores the mode
    assert gain.abs().max() == 0 and (null_lp < 0).all()
    ones = torch.ones(len(h), null.numel())
    gain, null_lp2, with_lp = rec.target_gain(batch, h, candidates, rows, slot, ones)
    if head != "verdict":  # (the verdict head's first call ran on the unfitted head)
        torch.testing.assert_close(null_lp2, null_lp)
    torch.testing.assert_close(gain, with_lp - null_lp2)
    assert gain.abs().max() > 1e-4 and not gain.requires_grad


def test_the_verdict_head_reports_its_trust_in_may_like(synthetic_data, batch):
    rec = recommender(synthetic_data, "verdict")
    randomise(rec.fusion)
    with rec.predicting():
        h = rec.user_state(batch)
        candidates = rec.candidates(batch, h)
        z, present = rec.null_explanations(h)
        z[:, 0, 0], present[:] = 1.0, True  # every sample likes its first candidate, names no other
        _, bonus = rec.fusion(rec.backbone.score(h, batch), candidates, z.view(len(h), K, 2), present.expand(-1, K))
        trust = rec.fuse(batch, h, z, present, candidates).diagnostics["fusion/liked_bonus"]
        torch.testing.assert_close(trust, bonus[:, 0].mean() - bonus[:, 1:].mean())
        # rows dropped to the null explanation keep their stored z, but never count as liked
        present[::2] = False
        _, bonus = rec.fusion(rec.backbone.score(h, batch), candidates, z.view(len(h), K, 2), present.expand(-1, K))
        trust = rec.fuse(batch, h, z, present, candidates).diagnostics["fusion/liked_bonus"]
        torch.testing.assert_close(trust, bonus[1::2, 0].mean() - bonus[1::2, 1:].mean())
        assert not torch.isclose(trust, bonus[:, 0].mean() - bonus[1::2, 1:].mean())
        present[:] = False
        assert "fusion/liked_bonus" not in rec.fuse(batch, h, z, present, candidates).diagnostics


def test_the_verdict_fit_reads_explained_and_null_rows_and_trusts_a_verdict_that_knows(synthetic_data, batch):
    """fit_verdicts on rows whose "may like" names the target: the fitted liked bonus is large, null rows
    (present False) are fitted as null, and the target's rank rises where "may like" names it."""
    rec = recommender(synthetic_data, "verdict")
    with rec.predicting():
        h = rec.user_state(batch)
        candidates = rec.candidates(batch, h)
    batch = {**batch, "target": batch["target"].clone()}  # targets at ranks 1..K in turn, but the first's
    batch["target"][:, -1] = candidates[torch.arange(len(h)), torch.arange(len(h)) % K]
    batch["target"][0, -1] = next(p for p in range(rec.backbone.num_pois) if p not in candidates[0])
    target = rec.target(batch)
    inside = (candidates == target[:, None]).any(1)
    assert inside.sum() == len(h) - 1
    z, present = rec.null_explanations(h)
    pairs = z.view(len(h), K, 2)
    pairs[:, :, 0] = (candidates == target[:, None]).float()  # "may like" names the target
    present[:] = True
    present[-1] = False  # dropped to the null explanation: fitted as null only
    rows = [(batch, z, present, candidates, torch.arange(len(h)))] * 8  # the same rows, enough to fit
    stats = rec.fit_verdicts(rows, ridge=1e-3)
    n_in = int(inside.sum())
    assert stats["fusion/fit_rows"] == 8 * (n_in + int((inside & present[:, 0]).sum()))
    assert stats["fusion/fit_explained_rows"] == 8 * int((inside & present[:, 0]).sum())
    assert stats["fusion/fitted_liked_bonus"] > 2.0
    with rec.predicting():
        own = rec.logits(batch, h, z, present.clone().fill_(True), candidates)
        null = rec.logits(batch, h, *rec.null_explanations(h), candidates)
    own_rank, null_rank = ranks_from_scores(own, target)[inside], ranks_from_scores(null, target)[inside]
    assert (own_rank <= null_rank).all() and (own_rank == 1).all()


def test_the_reciprocal_rank_gain_moves_only_where_a_verdict_crosses_the_target(synthetic_data, batch):
    """rl.reward.metric=reciprocal_rank: with a fusion that lifts "may like" by 20 logits, liking the target
    puts it first (gain 1 - 1/its rank without); liking a top-K candidate when the target is below the top K
    leaves its rank as it was (gain exactly 0), while the log-likelihood gain there is below 0 (the lifted
    candidate takes mass from the target through the softmax normaliser)."""
    rec = recommender(synthetic_data, "verdict")
    with torch.no_grad():
        rec.fusion.weight[:, rec.fusion.feature_index("liked")] = 20.0
    with rec.predicting():
        h = rec.user_state(batch)
        candidates = rec.candidates(batch, h).clone()
        scores = rec.backbone.score(h, batch)
    target = rec.target(batch)
    outside = ~(candidates == target[:, None]).any(1)
    assert outside[1:].any()
    candidates[0, 1] = target[0]  # row 0: the target shown at position 1, whatever its rank
    like = torch.zeros(len(h), K, 2)
    like[0, 1, 0] = 1.0  # row 0 likes the target
    like[1:, 0, 0] = 1.0  # the others like their first candidate
    rows, slot = torch.arange(len(h)), torch.zeros(len(h), dtype=torch.long)
    gain, null_rr, with_rr = rec.target_gain(batch, h, candidates, rows, slot, like.flatten(1), "reciprocal_rank")
    torch.testing.assert_close(null_rr, (1.0 / ranks_from_scores(scores, target)).float())
    assert with_rr[0] == 1.0 and gain[0] == pytest.approx(1.0 - float(null_rr[0]))
    rest = outside.clone()
    rest[0] = False
    assert (gain[rest] == 0).all()
    log_gain = rec.target_gain(batch, h, candidates, rows, slot, like.flatten(1))[0]
    assert (log_gain[rest] < 0).all()
    with pytest.raises(ValueError, match="unknown reward metric 'mrr'"):
        rec.target_gain(batch, h, candidates, rows, slot, like.flatten(1), "mrr")
