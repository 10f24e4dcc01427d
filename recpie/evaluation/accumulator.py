"""Collect per-sample ranks (and top-K lists) across batches and DDP processes, keyed by sample id.

The DistributedSampler pads the last batch by repeating samples, so under DDP some samples are
scored twice; gathering (sample_id, rank) pairs from every process and keeping one row per id makes
each sample count exactly once. Without an initialised process group it works locally.
``RankMetric`` (recpie.evaluation.rank_metric) is the same as a torchmetrics Metric.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist


def checked_batch(sample_id, ranks, topk, topk_so_far: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """``sample_id`` and ``ranks`` as int64/float64 arrays, after checking a batch of (id, rank, topk).

    ``topk_so_far``: whether earlier batches came with top-K lists (None: this is the first batch)."""
    ids = np.asarray(torch.as_tensor(sample_id).cpu(), dtype=np.int64)
    r = np.asarray(torch.as_tensor(ranks).cpu(), dtype=np.float64)
    if ids.shape != r.shape or ids.ndim != 1:
        raise ValueError(f"sample_id and ranks must both be [B]; got {ids.shape} and {r.shape}")
    if (ids < 0).any():
        raise ValueError("sample_id -1 marks a train window, which has no evaluation sample")
    if topk_so_far is not None and (topk is not None) != topk_so_far:
        raise ValueError("pass topk in every update or in none")
    return ids, r


def one_row_per_id(ids: np.ndarray, ranks: np.ndarray, topk: np.ndarray | None, expected: int | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(sample ids sorted, ranks, topk or None) keeping each id's first row (the sampler's repeats go).

    ``expected``: the split's sample count; raises if ids are missing or out of range, so a sampler that
    drops samples cannot go unnoticed."""
    uniq, first = np.unique(ids, return_index=True)
    ranks, topk = ranks[first], (topk[first] if topk is not None else None)
    if expected is not None and not np.array_equal(uniq, np.arange(expected)):
        missing = np.setdiff1d(np.arange(expected), uniq)
        raise RuntimeError(f"evaluated {len(uniq)} distinct samples, expected ids 0..{expected - 1}; "
                           f"missing {missing[:10].tolist()}, out of range "
                           f"{np.setdiff1d(uniq, np.arange(expected))[:10].tolist()}")
    return uniq, ranks, topk


class RankAccumulator:
    """Accumulates ``(sample_id, rank, topk)``; ``result()`` returns them deduplicated, by sample id."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._ids: list[np.ndarray] = []
        self._ranks: list[np.ndarray] = []
        self._topk: list[np.ndarray] = []

    def update(self, sample_id: torch.Tensor | np.ndarray, ranks: torch.Tensor | np.ndarray,
               topk: torch.Tensor | np.ndarray | None = None) -> None:
        ids, r = checked_batch(sample_id, ranks, topk, bool(self._topk) if self._ids else None)
        self._ids.append(ids)
        self._ranks.append(r)
        if topk is not None:
            self._topk.append(np.asarray(torch.as_tensor(topk).cpu(), dtype=np.int64))

    def _local(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if not self._ids:
            return np.zeros(0, np.int64), np.zeros(0), None
        topk = np.concatenate(self._topk) if self._topk else None
        return np.concatenate(self._ids), np.concatenate(self._ranks), topk

    def result(self, expected: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(sample_ids sorted, ranks, topk or None), gathered over all processes, one row per id
        (``expected``: see ``one_row_per_id``)."""
        parts = [self._local()]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, parts[0])
            parts = gathered
        ids = np.concatenate([p[0] for p in parts])
        ranks = np.concatenate([p[1] for p in parts])
        with_topk = [p[2] for p in parts if p[2] is not None]
        topk = np.concatenate(with_topk) if with_topk else None
        return one_row_per_id(ids, ranks, topk, expected)
