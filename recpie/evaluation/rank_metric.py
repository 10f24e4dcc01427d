"""Per-sample ranks (and top-K lists) collected across batches and DDP processes, keyed by sample id.

The DistributedSampler pads the last batch by repeating samples, so under DDP some samples are scored
twice; ``RankMetric`` (a torchmetrics Metric) concatenates its states across processes
(``dist_reduce_fx="cat"``) and keeps one row per sample id, so each sample counts exactly once. As a
module attribute of a LightningModule it follows the module's device; ``reset()`` after each epoch's
``compute()`` starts the next epoch empty. ``compute()`` returns (sample ids sorted, ranks, top-K or
None) as numpy arrays.

Under DDP every process must update at least once before ``compute()`` (the DistributedSampler gives each
one a sample even of a tiny split): torchmetrics stands in a float32 empty tensor for a process without
data, and gathering it with the others' int64 ids would fail.
"""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


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


class RankMetric(Metric):
    """``expected``: the split's sample count, checked at ``compute()`` (None: a subset, not checked)."""

    full_state_update = False  # an update needs only its own batch
    is_differentiable = False

    def __init__(self, expected: int | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.expected = expected
        self.add_state("sample_ids", default=[], dist_reduce_fx="cat")
        self.add_state("ranks", default=[], dist_reduce_fx="cat")
        self.add_state("topk", default=[], dist_reduce_fx="cat")

    def update(self, sample_id: torch.Tensor, ranks: torch.Tensor, topk: torch.Tensor | None = None) -> None:
        checked_batch(sample_id, ranks, topk, bool(self.topk) if self.sample_ids else None)
        self.sample_ids.append(torch.as_tensor(sample_id, device=self.device).long())
        self.ranks.append(torch.as_tensor(ranks, device=self.device).double())  # fractional ranks stay exact
        if topk is not None:
            self.topk.append(torch.as_tensor(topk, device=self.device).long())

    def compute(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        ids, ranks, topk = (_joined(state) for state in (self.sample_ids, self.ranks, self.topk))
        if ids is None:  # nothing scored on any process
            ids, ranks = np.zeros(0, np.int64), np.zeros(0)
        return one_row_per_id(ids, ranks, topk, self.expected)


def _joined(state: list[torch.Tensor] | torch.Tensor) -> np.ndarray | None:
    """A state as one array: a list of batches (local), or one tensor (after a DDP sync); None when empty
    (a sync turns an empty list into an empty tensor per process)."""
    if isinstance(state, list):
        if not state:
            return None
        state = dim_zero_cat(state)
    return state.cpu().numpy() if state.numel() else None
