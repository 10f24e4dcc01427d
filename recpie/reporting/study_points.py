"""The data-efficiency study's saved points: one npz (arrays) + JSON (metadata, written last) per point.

Written by the data_efficiency recipe as each (fraction, seed) finishes, so the study resumes; read back by
it and by a recpie run that compares itself with the study (``recpie.reference_study``). Never pickled.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

COUNTERS = "counters"  # the training-free counters' test ranks: arrays line0, line1, ...; JSON: their names


def point_name(fraction: float, seed: int) -> str:
    return f"f{fraction:g}_seed{seed}"


def point_files(study_dir: Path, name: str) -> tuple[Path, Path]:
    """(npz, json) of one point; the JSON marks it done."""
    return tuple(Path(study_dir) / "points" / f"{name}.{ext}" for ext in ("npz", "json"))


def read_point(study_dir: Path, name: str) -> tuple[dict | list, dict[str, np.ndarray]] | None:
    """(metadata, arrays) of a finished point; None if it is not done."""
    npz, done = point_files(study_dir, name)
    if not done.is_file():
        return None
    with np.load(npz, allow_pickle=False) as z:
        return json.loads(done.read_text()), {k: z[k] for k in z.files}


def write_point(study_dir: Path, name: str, meta: dict | list, arrays: dict[str, np.ndarray]) -> None:
    npz, done = point_files(study_dir, name)
    npz.parent.mkdir(parents=True, exist_ok=True)
    np.savez(npz, **arrays)
    done.write_text(json.dumps(meta, indent=2))  # written last: marks the point done
