"""Fractional ranks under random tie-breaking, and the metrics computed from them.

rank = 1 + (#items scored strictly higher than the target) + (#other items scored equal) / 2, the
expected rank when ties are broken at random; a constant scorer therefore ranks the target in the
middle, never first. Acc@k = [rank <= k], NDCG@k = [rank <= k] / log2(1 + rank), MRR = 1 / rank.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

ACC_KS = (1, 5, 10, 20)
NDCG_KS = (5, 10)
METRIC_NAMES = tuple(f"acc@{k}" for k in ACC_KS) + tuple(f"ndcg@{k}" for k in NDCG_KS) + ("mrr",)


def ranks_from_scores(scores: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Fractional rank (float64 [B]) of ``target[b]`` among ``scores[b, :]`` (all P items)."""
    scores = torch.as_tensor(scores)
    target = torch.as_tensor(target, device=scores.device).long()
    if scores.dim() != 2 or target.shape != scores.shape[:1]:
        raise ValueError(f"scores must be [B, P] and target [B]; got {tuple(scores.shape)} and "
                         f"{tuple(target.shape)}")
    num_items = scores.shape[1]
    if len(target) and (int(target.min()) < 0 or int(target.max()) >= num_items):
        raise ValueError(f"target ids must lie in [0, {num_items}); got range "
                         f"[{int(target.min())}, {int(target.max())}]")
    if torch.isnan(scores).any():
        bad = torch.isnan(scores).any(dim=1).nonzero()[0].item()
        raise ValueError(f"scores contain NaN (first in row {bad}); a NaN cannot be ranked")
    t = scores.gather(1, target[:, None])
    higher = (scores > t).sum(dim=1)
    equal_others = (scores == t).sum(dim=1) - 1
    return (1.0 + higher.double() + equal_others.double() / 2.0).cpu()


def ranks_from_topk(topk: Sequence[Sequence[int]], target: Sequence[int], num_items: int) -> np.ndarray:
    """Fractional ranks from ranked top-K lists: listed items take ranks 1..k in order, the
    ``num_items - k`` unlisted ones share the remaining ranks (tie rule), so a missed target gets
    ``k + 1 + (num_items - k - 1) / 2``."""
    if len(topk) != len(target):
        raise ValueError(f"{len(topk)} top-K lists for {len(target)} targets")
    ranks = np.empty(len(target), dtype=np.float64)
    for i, (items, tgt) in enumerate(zip(topk, target, strict=True)):
        items = [int(x) for x in items]
        if len(set(items)) != len(items):
            raise ValueError(f"top-K list {i} repeats an item: {items}")
        if any(x < 0 or x >= num_items for x in items):
            raise ValueError(f"top-K list {i} holds an item outside [0, {num_items}): {items}")
        k = len(items)
        ranks[i] = items.index(tgt) + 1 if tgt in items else k + 1 + (num_items - k - 1) / 2.0
    return ranks


def per_sample_metric(ranks: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """One metric's value for each sample (the mean over samples is the reported metric)."""
    r = np.asarray(ranks, dtype=np.float64)
    kind, _, k = name.partition("@")
    if name == "mrr":
        return 1.0 / r
    if kind == "acc" and k:
        return (r <= int(k)).astype(np.float64)
    if kind == "ndcg" and k:
        return np.where(r <= int(k), 1.0 / np.log2(1.0 + r), 0.0)
    raise ValueError(f"unknown metric {name!r}; use acc@k, ndcg@k or mrr (e.g. {', '.join(METRIC_NAMES)})")


def metrics_from_ranks(ranks: np.ndarray | torch.Tensor,
                       names: Sequence[str] = METRIC_NAMES) -> dict[str, float]:
    """Mean of each metric over the given fractional ranks (empty input raises: nothing to report)."""
    r = np.asarray(ranks, dtype=np.float64)
    if r.size == 0:
        raise ValueError("no ranks to compute metrics from")
    return {name: float(per_sample_metric(r, name).mean()) for name in names}
