"""recpie.explainer.information.crossfit_ranks: every sample re-ranked by a reader fitted on the other fold."""
from __future__ import annotations

import numpy as np
import torch

from recpie.explainer.information import crossfit_ranks


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
