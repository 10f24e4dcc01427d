"""The one evaluator: full ranking over all POIs with the design's tie rule (see shared/DESIGN.md)."""
from recpie.evaluation.rank_metric import RankMetric
from recpie.evaluation.ranking import (
    METRIC_NAMES,
    metrics_from_ranks,
    per_sample_metric,
    ranks_from_scores,
    ranks_from_topk,
)

__all__ = [
    "METRIC_NAMES",
    "RankMetric",
    "metrics_from_ranks",
    "per_sample_metric",
    "ranks_from_scores",
    "ranks_from_topk",
]
