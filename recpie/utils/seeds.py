"""Seeds derived from (seed, epoch or cycle, rank, phase): every random choice of a run can be replayed on resume.

One derivation, a CRC-32 of a text naming the draw: ``phase_seed`` names it by its parts (the joint
module's phases), ``epoch_seed`` by the backbone's epoch (the text it has always used, so the published
backbone fits replay unchanged).
"""
from __future__ import annotations

import zlib

import numpy as np
import torch


def _seed_of(text: str) -> int:
    return zlib.crc32(text.encode()) & 0x7FFFFFFF  # 31 bits: valid for torch, numpy and Python generators


def phase_seed(*parts: int | str) -> int:
    """A stable seed from (seed, cycle, rank, phase name, ...)."""
    return _seed_of(repr(parts))


def epoch_seed(seed: int, epoch: int) -> int:
    """The backbone's seed for one training epoch (dropout and the train-window order)."""
    return _seed_of(f"backbone/{seed}/{epoch}")


def subset_ids(n: int, k: int, seed: int) -> torch.Tensor:
    """A fixed, documented subset: the first k of a seeded permutation, sorted (all when k = 0 or k >= n)."""
    if k <= 0 or k >= n:
        return torch.arange(n)
    return torch.from_numpy(np.sort(np.random.default_rng(seed).permutation(n)[:k]))
