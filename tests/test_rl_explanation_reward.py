"""The reward's content part: the recommender's log-likelihood gain from a sample's own explanation over
another sample's (or the null), on a hand-built recommender whose verdict fusion has set weights; the
derangement that picks the other sample; unreadable texts scored as the null; the "may like" hit rate."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from recpie.components.explained_recommender import ExplainedRecommender, Fused
from recpie.evaluation.verdicts import verdict_pairs
from recpie.explainer.encoder import VerdictEncoder
from recpie.explainer.writer import ExplanationWriter
from recpie.rl.explainer_trainer import ExplainerTrainer
from recpie.rl.reward import derangement, explanation_reward, other_rows

T = torch.tensor
K, POIS = 3, 6


class Scorer(nn.Module):
    """A backbone's interface: the user state is given in the batch, logits are h . E (fixed)."""

    hidden_size = 2

    def __init__(self):
        super().__init__()
        self.register_buffer("emb", torch.arange(POIS * 2, dtype=torch.float32).view(POIS, 2).sin())

    def user_state(self, batch):
        return batch["h"]

    def score(self, h, batch):
        return h @ self.emb.T


class LikedBonus(nn.Module):
    """A verdict fusion with set weights: "may like" adds ``weight`` x its share to a candidate's logit;
    the null explanation (present False) adds nothing. weight 0 is the identity."""

    per_candidate, reranks = False, True

    def __init__(self, weight: float):
        super().__init__()
        self.weight = weight

    def fuse(self, backbone, batch, h, z, present, candidates=None, crossfit_ids=None) -> Fused:
        logits = backbone.score(h, batch)
        liked = verdict_pairs(z, K)[..., 0] * present.float()  # present [B, 1] broadcasts over the K
        return Fused(logits.scatter_add(1, candidates, self.weight * liked))


def verdict(liked_rank: int) -> torch.Tensor:
    """The flat verdict (2K) of a text whose "may like" names candidate ``liked_rank``."""
    z = torch.zeros(K, 2)
    z[liked_rank, 0] = 1.0
    return z.view(-1)


@pytest.fixture
def rollout():
    """Two samples, one explanation each (group of 1): sample 0's names its target (candidate rank 2),
    sample 1's names rank 0, not its target (rank 1)."""
    torch.manual_seed(0)
    batch = {"h": torch.randn(2, 2), "target": T([[0, 4], [0, 1]])}
    candidates = T([[0, 2, 4], [3, 1, 5]])
    rows, slot = T([0, 1]), T([0, 0])
    z = torch.stack([verdict(2), verdict(0)])
    return batch, candidates, rows, slot, z


def reward(weight, rollout, present, baseline):
    batch, candidates, rows, slot, z = rollout
    rec = ExplainedRecommender(Scorer(), LikedBonus(weight), 2 * K, K)
    parts = explanation_reward(rec, batch, batch["h"], candidates, rows, slot, z, present, other=T([1, 0]))
    return parts.raw(baseline), parts


@pytest.mark.parametrize("baseline", ["other", "null"])
def test_the_reward_is_zero_while_the_fusion_is_the_identity(rollout, baseline):
    raw, _ = reward(0.0, rollout, T([True, True]), baseline)
    torch.testing.assert_close(raw, torch.zeros(2))


def test_the_reward_is_zero_for_the_null_explanation(rollout):
    raw, parts = reward(2.0, rollout, T([False, False]), "null")
    torch.testing.assert_close(raw, torch.zeros(2))
    torch.testing.assert_close(parts.own, parts.null)
    raw, _ = reward(2.0, rollout, T([False, False]), "other")  # every explanation null: nothing to compare
    torch.testing.assert_close(raw, torch.zeros(2))


def test_naming_the_target_pays_under_a_fitted_fusion(rollout):
    raw_other, parts = reward(2.0, rollout, T([True, True]), "other")
    raw_null, _ = reward(2.0, rollout, T([True, True]), "null")
    # sample 0 names its target: above the null and above sample 1's verdict (which names its rank 0, not the
    # target); sample 1 names a non-target: below both
    assert raw_other[0] > 0.1 and raw_null[0] > 0.1
    assert raw_other[1] < 0 and raw_null[1] < 0
    torch.testing.assert_close(parts.stats()["reward/content"], (parts.own - parts.other).mean().item())


def test_an_unreadable_explanation_scores_as_the_null_not_as_a_verdict_naming_nothing(rollout):
    raw, parts = reward(2.0, rollout, T([False, True]), "other")
    torch.testing.assert_close(parts.own[0], parts.null[0])
    torch.testing.assert_close(parts.other[1], parts.null[1])  # sample 1 is compared with sample 0's: null


def test_derangements_never_keep_a_sample_and_other_rows_keep_slot_and_group_member():
    for n in (2, 3, 7):
        for seed in range(20):
            other = derangement(n, torch.Generator().manual_seed(seed))
            assert sorted(other.tolist()) == list(range(n)) and (other != torch.arange(n)).all()
    with pytest.raises(ValueError, match="rollout_prompts"):
        derangement(1, torch.Generator())
    # 3 samples x 2 rows each (e.g. a group of 2): row r of sample i -> the same member of sample other[i]
    rows = T([0, 0, 1, 1, 2, 2])
    picked = other_rows(rows, torch.Generator().manual_seed(3))
    other = derangement(3, torch.Generator().manual_seed(3))
    assert picked.tolist() == [int(other[i]) * 2 + r % 2 for r, i in enumerate(rows.tolist())]


def writer_double(encoder: str) -> SimpleNamespace:
    """Just what ExplanationWriter.encode / labels read: a verdict encoder, POI names, the config, the device."""
    double = SimpleNamespace(explainer=SimpleNamespace(encode=VerdictEncoder(K)),
                             data=SimpleNamespace(catalogue=SimpleNamespace(label=lambda p: f"place {p}")),
                             cfg=SimpleNamespace(explainer=SimpleNamespace(encoder=encoder)),
                             host=SimpleNamespace(device=torch.device("cpu")))
    double.labels = lambda candidates: ExplanationWriter.labels(double, candidates)
    return double


TEXTS = ["may like: place 4, near home / may not like: place 0, far away",  # names candidates 2 and 0
         "may like: somewhere new / may not like: nothing here",  # parsed, names no candidate
         "web page debris"]  # unparseable


def test_the_writer_stores_an_unparseable_text_as_absent_under_a_verdict_encoder():
    candidates = T([[0, 2, 4]] * 3)
    z, present = ExplanationWriter.encode(writer_double("verdict"), TEXTS, candidates)
    assert present.tolist() == [True, True, False]  # "present, nothing named" only for a parsed text
    torch.testing.assert_close(z[0], T([0.0, 1.0, 0.0, 0.0, 1.0, 0.0]))  # (like, dislike) per candidate
    _, present = ExplanationWriter.encode(writer_double("llm"), TEXTS, candidates)
    assert present.all()  # an embedding of any text is an explanation; the unparseable penalty speaks


def test_like_hit_rate_counts_the_texts_whose_may_like_names_the_target():
    trainer = SimpleNamespace(writer=writer_double("llm"))
    trainer.liked = lambda texts, candidates: ExplainerTrainer.liked(trainer, texts, candidates)
    candidates = T([[0, 2, 4]] * 3)
    hits = ExplainerTrainer.like_hit_rate(trainer, TEXTS, candidates, T([4, 4, 4]))
    assert hits == pytest.approx(1 / 3)
    assert ExplainerTrainer.like_hit_rate(trainer, TEXTS, candidates, T([0, 0, 0])) == 0.0
