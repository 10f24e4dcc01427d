"""Paired bootstrap confidence interval for a metric difference between two models on the same samples."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recpie.evaluation.ranking import per_sample_metric


@dataclass(frozen=True)
class PairedCI:
    metric: str
    diff: float  # mean(metric of a) - mean(metric of b) on the observed samples
    low: float
    high: float
    level: float

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap_ci(ranks_a: np.ndarray, ranks_b: np.ndarray, metric: str, n_boot: int = 2000,
                        level: float = 0.95, seed: int = 0) -> PairedCI:
    """Percentile CI of mean(metric(a)) - mean(metric(b)), resampling samples (rows paired).

    Both rank arrays must be ordered by the same sample ids (the last axis). Either may be [S, N], one row
    per seed: its per-sample metric is averaged over the seeds first, so the CI is that of the seed-mean
    difference (a model's mean over 3 seeds against a deterministic baseline, samples resampled)."""
    a = per_sample_metric(ranks_a, metric)
    b = per_sample_metric(ranks_b, metric)
    a, b = (x.mean(0) if x.ndim == 2 else x for x in (a, b))
    return paired_values_ci(a, b, metric, n_boot, level, seed)


def paired_values_ci(a: np.ndarray, b: np.ndarray, name: str, n_boot: int = 2000, level: float = 0.95,
                     seed: int = 0) -> PairedCI:
    """Percentile CI of mean(a) - mean(b) for per-sample values (rows paired): the same resampling as
    ``paired_bootstrap_ci`` for quantities that are not a rank metric (e.g. a hit share per sample)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired bootstrap needs two equal, non-empty arrays; got {a.shape}, {b.shape}")
    low, high = _mean_ci(a - b, n_boot, level, seed)
    return PairedCI(name, float((a - b).mean()), low, high, level)


def bootstrap_ci(ranks: np.ndarray, metric: str, n_boot: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float, float]:
    """(mean, low, high): percentile CI of one model's metric over resampled samples; ``ranks`` [N] or
    [S, N] (per-sample metric averaged over the seeds first, as in ``paired_bootstrap_ci``)."""
    values = per_sample_metric(ranks, metric)
    values = values.mean(0) if values.ndim == 2 else values
    if values.size == 0:
        raise ValueError("bootstrap needs a non-empty rank array")
    return (float(values.mean()), *_mean_ci(values, n_boot, level, seed))


def _mean_ci(values: np.ndarray, n_boot: int, level: float, seed: int) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for start in range(0, n_boot, 256):  # chunks keep the [n_boot, m] index matrix small
        idx = rng.integers(0, len(values), size=(min(256, n_boot - start), len(values)))
        means[start:start + len(idx)] = values[idx].mean(axis=1)
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)
