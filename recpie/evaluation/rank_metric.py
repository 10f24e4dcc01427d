"""``RankAccumulator`` as a torchmetrics Metric: per-sample ranks kept by sample id, synchronised over DDP.

Its states are lists concatenated across processes (``dist_reduce_fx="cat"``), so torchmetrics does the
gathering that RankAccumulator does with ``all_gather_object``; the sampler's repeated samples are then
dropped the same way (``one_row_per_id``). As a module attribute of a LightningModule it follows the module's
device, and ``reset()`` after each epoch's ``compute()`` starts the next epoch empty. ``compute()`` returns
what ``RankAccumulator.result`` returns: (sample ids sorted, ranks, top-K or None) as numpy arrays.

Under DDP every process must update at least once before ``compute()`` (the DistributedSampler gives each
one a sample even of a tiny split): torchmetrics stands in a float32 empty tensor for a process without
data, and gathering it with the others' int64 ids would fail.
"""
from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from recpie.evaluation.accumulator import checked_batch, one_row_per_id


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
