"""``python -m recpie evaluate``: score an external model's predictions with the one evaluator.

Accepted files: a score matrix ``.npy`` / ``.pt`` of shape [m, P] (row i = sample i of the split,
higher = better) or a JSONL of ranked top-K lists ``{"sample_id": i, "topk": [poi, ...]}`` (unlisted
POIs share the remaining ranks under the tie rule).
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from recpie.data.types import CheckinData
from recpie.evaluation.breakdowns import breakdown, split_targets, standard_groups
from recpie.evaluation.config import EvalConfig
from recpie.evaluation.export import read_topk_jsonl
from recpie.evaluation.ranking import ranks_from_scores, ranks_from_topk
from recpie.evaluation.tables import metrics_table


def _load_scores(path: Path) -> torch.Tensor | np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, torch.Tensor):
        raise ValueError(f"{path}: expected a single [m, P] tensor, got {type(obj).__name__}")
    return obj


def ranks_from_file(data: CheckinData, split: str, path: str | Path, chunk_size: int = 512) -> np.ndarray:
    """Fractional ranks (ordered by sample id) of ``split``'s targets under the predictions in ``path``."""
    path = Path(path)
    targets = split_targets(data, split)
    m, num_pois = len(targets), data.num_pois
    if path.suffix == ".jsonl":
        lists = read_topk_jsonl(path)
        missing = sorted(set(range(m)) - set(lists))
        extra = sorted(set(lists) - set(range(m)))
        if missing or extra:
            raise ValueError(f"{path}: split {split!r} has sample ids 0..{m - 1}; missing {missing[:10]}, "
                             f"unknown {extra[:10]}")
        return ranks_from_topk([lists[i] for i in range(m)], targets, num_pois)
    if path.suffix not in (".npy", ".pt"):
        raise ValueError(f"{path}: unknown format {path.suffix!r}; use .npy, .pt ([m, P] scores) or .jsonl")
    scores = _load_scores(path)
    if tuple(scores.shape) != (m, num_pois):
        raise ValueError(f"{path}: scores have shape {tuple(scores.shape)}, split {split!r} needs "
                         f"({m}, {num_pois}) = (samples, POIs)")
    parts = [ranks_from_scores(torch.as_tensor(np.asarray(scores[s:s + chunk_size], dtype=np.float64)),
                               torch.as_tensor(targets[s:s + chunk_size])).numpy()
             for s in range(0, m, chunk_size)]
    return np.concatenate(parts)


def evaluate_file(data: CheckinData, split: str, path: str | Path,
                  cfg: EvalConfig | None = None) -> dict[str, dict[str, float]]:
    """Metrics of the predictions in ``path`` on ``split``: ``{group: {metric: value, "n": count}}``."""
    cfg = cfg or EvalConfig()
    ranks = ranks_from_file(data, split, path, cfg.chunk_size)
    return breakdown(ranks, standard_groups(data, split, cfg.activity_bins))


def load_experiment_data(experiment: str) -> tuple[CheckinData, EvalConfig]:
    """A named experiment's processed data and eval section (through the config and the data cache)."""
    from omegaconf import OmegaConf

    from recpie.config import data_config, load_experiment
    from recpie.data.load import load_checkin_data

    cfg = load_experiment(experiment)
    return load_checkin_data(data_config(cfg)), OmegaConf.to_object(cfg.eval)


def evaluate_main(argv: Sequence[str],
                  load_data: Callable[[str], tuple[CheckinData, EvalConfig]] = load_experiment_data) -> int:
    """CLI body: ``--experiment NAME --file PATH [--split test] [--out metrics.json]``; prints a table.

    ``load_data(experiment)`` returns that experiment's CheckinData and eval config."""
    parser = argparse.ArgumentParser(prog="python -m recpie evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", required=True, help="experiment whose data/split to score against")
    parser.add_argument("--file", required=True, type=Path, help=".npy/.pt [m, P] scores or .jsonl top-K")
    parser.add_argument("--split", default="test", choices=["train", "val", "test"])
    parser.add_argument("--out", type=Path, help="also write the metrics as JSON here")
    args = parser.parse_args(list(argv))
    data, cfg = load_data(args.experiment)
    results = evaluate_file(data, args.split, args.file, cfg)
    print(metrics_table(results, first="group"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    return 0
