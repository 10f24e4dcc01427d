"""The one evaluator: full ranking over all POIs with the design's tie rule (see shared/DESIGN.md)."""
from recpie.evaluation.accumulator import RankAccumulator
from recpie.evaluation.ranking import (
    METRIC_NAMES,
    metrics_from_ranks,
    per_sample_metric,
    ranks_from_scores,
    ranks_from_topk,
)

__all__ = [
    "METRIC_NAMES",
    "RankAccumulator",
    "metrics_from_ranks",
    "per_sample_metric",
    "ranks_from_scores",
    "ranks_from_topk",
]
