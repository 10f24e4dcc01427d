"""recpie.explainer.information: crossfit_ranks re-ranks every sample by a reader fitted on the other fold;
relay_ranks reads a teacher's relayed choice through the fitted verdict fusion."""
from __future__ import annotations

import numpy as np
import torch

from recpie.explainer.information import TopK, crossfit_ranks, relay_ranks, relay_verdicts


def test_a_feature_naming_the_target_puts_it_first_and_rows_stay_aligned():
    rng = np.random.default_rng(0)
    n, k = 400, 5
    slot = rng.integers(-1, k, n)  # -1: the target is not among the K
    ranks = np.where(slot >= 0, slot + 1.0, 50.0)
    named = torch.zeros(n, k, 1)
    named[torch.arange(n)[slot >= 0], torch.from_numpy(slot[slot >= 0]), 0] = 1.0
    out = crossfit_ranks(torch.cat([torch.eye(k).expand(n, k, k), named], -1), slot, ranks)
    assert (out[slot >= 0] == 1).all() and (out[slot < 0] == 50).all()
    shuffled = named[torch.from_numpy(rng.permutation(n))]  # another sample's feature: no longer the target
    out = crossfit_ranks(torch.cat([torch.eye(k).expand(n, k, k), shuffled], -1), slot, ranks)
    assert (out[slot >= 0] == 1).mean() < 0.5


def test_a_relay_of_a_teacher_that_knows_puts_the_target_first_through_the_fitted_fusion():
    """relay_ranks: a teacher whose fact names the target, relayed on every sample, is read by the fitted
    verdict fusion (a large liked bonus): targets among the K come first; at 0% agreement "may like" names
    the recommender's top-1 and nothing is gained."""
    rng = np.random.default_rng(0)

    def view(n, k=4):
        slot = rng.integers(-1, k, n)
        target_fact = np.zeros((n, k, 1), np.float32)
        target_fact[np.flatnonzero(slot >= 0), slot[slot >= 0], 0] = 1.0
        logits = np.sort(rng.normal(size=(n, k)).astype(np.float32), 1)[:, ::-1].copy()  # best first
        ranks = np.where(slot >= 0, slot + 1.0, 50.0)
        top = TopK(np.tile(np.arange(k), (n, 1)), logits, np.zeros(n, np.int64), ranks, np.zeros((n, 2), np.float32))
        top.target = np.where(slot >= 0, slot, 99)  # the candidates are 0..K-1
        return top, target_fact

    (val, vf), (test, tf) = view(400), view(300)
    ranks, bonus = relay_ranks(val, vf, test, tf, agree=1.0)
    assert bonus > 2.0 and (ranks[test.slot >= 0] == 1).all() and (ranks[test.slot < 0] == 50).all()
    ranks, _ = relay_ranks(val, vf, test, tf, agree=0.0)
    assert (ranks[test.slot >= 0] == 1).mean() < 0.5


def test_relay_verdicts_name_the_teachers_choice_or_the_top1():
    order = np.array([[2, 0, 1], [1, 2, 0], [0, 1, 2]])
    z = relay_verdicts(order, np.array([True, False, True]))
    assert z[..., 0].argmax(1).tolist() == [2, 0, 0] and (z[..., 0].sum(1) == 1).all()
    # sample 1: "may like" names the top-1, which is also the teacher's lowest: no "may not like"
    assert z[0, 1, 1] == 1 and z[2, 2, 1] == 1 and z[1, :, 1].sum() == 0 and z[..., 1].sum() == 2
    z = relay_verdicts(np.array([[1, 0, 2]]), np.array([False]))
    assert z[0, 0, 0] == 1 and z[0, 2, 1] == 1 and z.sum() == 2
