"""Per-sample top-K predictions as JSONL: what every run exports, and what external models can submit."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from recpie.errors import InputError
from recpie.utils.files import write_or_explain


def topk_from_scores(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k best items per row ([B, k] int64), best first."""
    return torch.topk(scores, min(k, scores.shape[1]), dim=1).indices


def write_topk_jsonl(path: str | Path, sample_ids: np.ndarray, topk: np.ndarray,
                     targets: np.ndarray | None = None, ranks: np.ndarray | None = None) -> Path:
    """One line per sample: ``{"sample_id", "topk"[, "target", "rank"]}`` (rank = fractional rank), the
    file written whole or not at all (a full disk: ConfigError naming it; recpie/utils/files.py)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, sid in enumerate(sample_ids):
        row = {"sample_id": int(sid), "topk": [int(x) for x in topk[i]]}
        if targets is not None:
            row["target"] = int(targets[i])
        if ranks is not None:
            row["rank"] = float(ranks[i])
        lines.append(json.dumps(row) + "\n")
    write_or_explain(path, "".join(lines), "run.output_dir")
    return path


def _integer(value: object) -> int:
    """A JSON integer as is; anything else (5.9, "5", true) is an error, never truncated to an id."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{json.dumps(value)} is not an integer id")
    return value


def read_topk_jsonl(path: str | Path) -> dict[int, list[int]]:
    """``{sample_id: topk}``; a malformed line raises naming the file and line."""
    out: dict[int, list[int]] = {}
    for lineno, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)  # UTF-8 JSON; bad bytes raise UnicodeDecodeError, a ValueError
            sid, items = _integer(row["sample_id"]), [_integer(x) for x in row["topk"]]
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"{path}:{lineno}: expected {{\"sample_id\": int, \"topk\": [int, ...]}}"
                             f" ({type(e).__name__}: {e})") from None
        if sid in out:
            raise InputError(f"{path}:{lineno}: sample_id {sid} appears twice")
        out[sid] = items
    return out
