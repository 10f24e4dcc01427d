"""Run any chunked scorer over a split and rank its targets (baselines, external scorers)."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from recpie.data.types import CheckinData
from recpie.evaluation.breakdowns import split_targets
from recpie.evaluation.export import topk_from_scores
from recpie.evaluation.ranking import ranks_from_scores

Scorer = Callable[[CheckinData, str, np.ndarray], np.ndarray]  # (data, split, sample rows) -> [b, P]


def rank_split(score: Scorer, data: CheckinData, split: str, chunk_size: int = 512,
               topk: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Fractional ranks [m] and top-K lists [m, topk] of every sample of ``split``, in sample order."""
    targets = split_targets(data, split)
    ranks, lists = [], []
    for start in range(0, len(targets), chunk_size):
        rows = np.arange(start, min(start + chunk_size, len(targets)))
        s = torch.as_tensor(score(data, split, rows))
        ranks.append(ranks_from_scores(s, torch.as_tensor(targets[rows])).numpy())
        lists.append(topk_from_scores(s, topk).numpy())
    return np.concatenate(ranks), np.concatenate(lists)
