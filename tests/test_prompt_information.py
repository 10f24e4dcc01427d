"""benchmarks/prompt_information.py: the re-ranker's ranks are those of its scores (the LLM's label
log-likelihoods it reads are Explainer.choice_logprobs, tested in test_scored_choice.py)."""
from __future__ import annotations

import numpy as np
import torch

from recpie.explainer.information import reranked_ranks


def test_reranked_ranks_reorder_the_top_k_only():
    class Scores(torch.nn.Module):  # scores = the single feature
        def forward(self, x):
            return x
    x = torch.tensor([[[0.0], [2.0], [1.0]], [[3.0], [2.0], [1.0]], [[0.0], [0.0], [1.0]]])
    slot, ranks = np.array([1, 2, -1]), np.array([2, 3, 40])
    assert reranked_ranks(Scores(), x, slot, ranks).tolist() == [1, 3, 40]
