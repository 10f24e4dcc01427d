"""Score an external model's predictions with the one evaluator (behind ``python -m recpie evaluate``).

Accepted files: a score matrix ``.npy`` / ``.pt`` of shape [m, P] (row i = sample i of the split,
higher = better) or a JSONL of ranked top-K lists ``{"sample_id": i, "topk": [poi, ...]}`` (unlisted
POIs share the remaining ranks under the tie rule).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recpie.data.types import CheckinData
from recpie.errors import InputError
from recpie.evaluation.breakdowns import breakdown, split_targets, standard_groups
from recpie.evaluation.config import EvalConfig
from recpie.evaluation.export import read_topk_jsonl
from recpie.evaluation.ranking import ranks_from_scores, ranks_from_topk
from recpie.utils.checkpoints import load_checkpoint


def _load_scores(path: Path) -> torch.Tensor | np.ndarray:
    if path.suffix == ".pt":
        obj = load_checkpoint(path, "--file")
    else:
        try:
            obj = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"{path}: not a readable .npy array ({e}); save it with numpy.save") from None
    numeric = obj.dtype.kind in "fiu" if isinstance(obj, np.ndarray) else isinstance(obj, torch.Tensor)
    if not numeric:
        raise InputError(f"{path}: expected a single numeric [m, P] array, got {type(obj).__name__}")
    return obj


def _chunk_ranks(scores, targets: np.ndarray, start: int, stop: int, path: Path) -> np.ndarray:
    """Ranks of rows start..stop; a NaN is reported at its row of the file."""
    chunk = torch.as_tensor(np.asarray(scores[start:stop], dtype=np.float64))
    nan_rows = torch.isnan(chunk).any(dim=1).nonzero()
    if len(nan_rows):
        raise InputError(f"{path}: row {start + int(nan_rows[0])} (sample id) holds NaN scores; "
                         "a NaN cannot be ranked")
    return ranks_from_scores(chunk, torch.as_tensor(targets[start:stop])).numpy()


def ranks_from_file(data: CheckinData, split: str, path: str | Path, chunk_size: int = 512) -> np.ndarray:
    """Fractional ranks (ordered by sample id) of ``split``'s targets under the predictions in ``path``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--file {path}: no such file")
    targets = split_targets(data, split)
    m, num_pois = len(targets), data.num_pois
    if path.suffix == ".jsonl":
        lists = read_topk_jsonl(path)
        missing = sorted(set(range(m)) - set(lists))
        extra = sorted(set(lists) - set(range(m)))
        if missing or extra:
            raise InputError(f"{path}: split {split!r} has sample ids 0..{m - 1}; missing {missing[:10]}, "
                             f"unknown {extra[:10]}")
        try:
            return ranks_from_topk([lists[i] for i in range(m)], targets, num_pois)
        except ValueError as e:  # a repeated or unknown POI id; the list index is the sample id
            raise InputError(f"{path}: {e} (list i = sample id i)") from None
    if path.suffix not in (".npy", ".pt"):
        raise InputError(f"{path}: unknown format {path.suffix!r}; use .npy, .pt ([m, P] scores) or .jsonl")
    scores = _load_scores(path)
    if tuple(scores.shape) != (m, num_pois):
        raise InputError(f"{path}: scores have shape {tuple(scores.shape)}, split {split!r} needs "
                         f"({m}, {num_pois}) = (samples, POIs)")
    return np.concatenate([_chunk_ranks(scores, targets, s, s + chunk_size, path) for s in range(0, m, chunk_size)])


def evaluate_file(data: CheckinData, split: str, path: str | Path,
                  cfg: EvalConfig | None = None) -> dict[str, dict[str, float]]:
    """Metrics of the predictions in ``path`` on ``split``: ``{group: {metric: value, "n": count}}``."""
    cfg = cfg or EvalConfig()
    ranks = ranks_from_file(data, split, path, cfg.chunk_size)
    return breakdown(ranks, standard_groups(data, split, cfg.activity_bins))
