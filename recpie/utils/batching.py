"""Rows of similar length batched together under a token budget: the explainer's prefill, log-prob
forwards and training micro-batches all pad a group only to its own longest row."""
from __future__ import annotations

import torch


def length_groups(lengths: torch.Tensor, budget: int) -> list[torch.Tensor]:
    """Row indices in groups of similar length (longest first) whose padded size, rows x longest length,
    stays within ``budget`` tokens (a row longer than the budget is a group of its own)."""
    order = torch.argsort(lengths.cpu(), descending=True, stable=True).to(lengths.device)
    groups, start = [], 0
    while start < len(order):
        longest = int(lengths[order[start]])
        size = max(1, budget // max(longest, 1))
        groups.append(order[start:start + size])
        start += size
    return groups


def in_row_order(groups: list[torch.Tensor], values: list[torch.Tensor]) -> torch.Tensor:
    """Per-group ``values`` (first dim: the rows of the matching group) back in the original row order
    (differentiable)."""
    return torch.cat(values)[torch.argsort(torch.cat(groups))]
