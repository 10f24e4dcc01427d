"""The data-efficiency study's saved points: one npz (arrays) + JSON (metadata, written last) per point.

Written by the data_efficiency recipe as each (fraction, seed) finishes, so the study resumes; read back by
it and by a recpie run that compares itself with the study (``recpie.reference_study``). Never pickled.
Both files are written atomically (recpie/utils/files.py); a damaged point (cut short, corrupt) reads as
not done, with a warning, so the study computes it again instead of stopping.
"""
from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from recpie.utils.files import write_or_explain

log = logging.getLogger(__name__)

COUNTERS = "counters"  # the training-free counters' test ranks: arrays line0, line1, ...; JSON: their names


def point_name(fraction: float, seed: int) -> str:
    return f"f{fraction:g}_seed{seed}"


def point_files(study_dir: Path, name: str) -> tuple[Path, Path]:
    """(npz, json) of one point; the JSON marks it done."""
    return tuple(Path(study_dir) / "points" / f"{name}.{ext}" for ext in ("npz", "json"))


def read_point(study_dir: Path, name: str) -> tuple[dict | list, dict[str, np.ndarray]] | None:
    """(metadata, arrays) of a finished point; None if it is not done, or damaged (warned: recomputed)."""
    npz, done = point_files(study_dir, name)
    if not done.is_file():
        return None
    try:
        meta = json.loads(done.read_text())
        with np.load(npz, allow_pickle=False) as z:
            return meta, {k: z[k] for k in z.files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:  # JSONDecodeError is a ValueError
        log.warning("study point %s is damaged (%s: %s): it counts as not done, the study computes it again",
                    done.with_suffix(""),
                    type(e).__name__, str(e).splitlines()[0] if str(e) else "")
        return None


def write_point(study_dir: Path, name: str, meta: dict | list, arrays: dict[str, np.ndarray]) -> None:
    """The arrays, then the JSON that marks the point done, each written whole or not at all (a full disk:
    ConfigError naming the file; the points already done are kept and the study resumes from them)."""
    npz, done = point_files(study_dir, name)
    npz.parent.mkdir(parents=True, exist_ok=True)
    write_or_explain(npz, lambda f: np.savez(f, **arrays), "run.output_dir")
    write_or_explain(done, json.dumps(meta, indent=2), "run.output_dir")  # written last: marks the point done
