"""The ``eval`` config section."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass
class EvalConfig:
    topk: int = 20  # length of the per-sample top-K lists every run exports (JSONL)
    chunk_size: int = 512  # samples scored at once ([chunk, P] score matrix in memory)
    activity_bins: int = 3  # users split into this many quantile groups by train check-ins (3 = terciles)
    bootstrap_samples: int = 2000  # resamples of the paired bootstrap for a metric difference
    bootstrap_level: float = 0.95  # two-sided confidence level of the bootstrap interval
    bootstrap_seed: int = 0  # seed of the bootstrap resampling, so CIs are reproducible
