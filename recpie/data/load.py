"""Load processed check-ins for a config: from the disk cache when the inputs and settings match.

The cache key hashes each input file's (absolute path, size, mtime) and every config key that changes
the processed data, so a hit never opens the raw files, and editing a file or a threshold misses. The
cache file (recpie/data/cache.py) holds arrays and JSON only; a corrupt or outdated one is rebuilt. A cache
folder that cannot be written (read-only, a file, a full disk) is refused before the raw files are read,
naming data.cache_dir; a write that fails later (the disk filled meanwhile) costs a warning, not the data.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path

from recpie.data.cache import FORMAT_VERSION, StaleCache, read_cache, write_cache
from recpie.data.config import DataConfig, resolve
from recpie.data.fraction import with_train_fraction
from recpie.data.pipeline import preprocess
from recpie.data.rawio import DataError
from recpie.data.sources import SOURCES
from recpie.data.types import CheckinData
from recpie.utils.files import check_writable

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
# keys that only shape batches or name the cache do not change the processed data
_NOT_IN_KEY = {"data_root", "dataset_dir", "meta_dir", "names_file", "max_len", "cache_dir", "use_cache",
               "train_targets", "history_summary", "batch_size", "eval_batch_size", "num_workers", "seed",
               "train_fraction", "train_fraction_unit", "train_fraction_seed"}  # applied after the cache


def data_root(cfg: DataConfig) -> Path:
    """data.data_root, else $RECPIE_DATA_ROOT, else ../shared/data next to the repo."""
    root = Path(cfg.data_root or os.environ.get("RECPIE_DATA_ROOT") or REPO.parent / "shared" / "data")
    if not root.is_dir():
        raise DataError(f"data root {root} is not a folder: set data.data_root or RECPIE_DATA_ROOT to the "
                        "folder holding the datasets (see README, 'Use your own data')")
    return root


def cache_dir(cfg: DataConfig) -> Path:
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recpie" / "data"


def input_files(cfg: DataConfig) -> list[Path]:
    """The raw files ``cfg`` reads (resolved config); raises DataError naming a missing one."""
    root = data_root(cfg)
    return SOURCES[cfg.source].input_files(cfg, root / cfg.dataset_dir, root)


def cache_key(cfg: DataConfig, files: list[Path]) -> str:
    stats = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in _NOT_IN_KEY}
    blob = json.dumps([FORMAT_VERSION, stats, settings], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def load_checkin_data(cfg: DataConfig) -> CheckinData:
    """Processed data for ``cfg`` (resolved here), restricted to its train fraction (recpie.data.fraction)."""
    cfg = resolve(cfg)
    return train_fraction_data(_processed(cfg), cfg.train_fraction, cfg.train_fraction_unit,
                               cfg.train_fraction_seed, "data.train_fraction")


def train_fraction_data(full: CheckinData, fraction: float, unit: str, seed: int, key: str) -> CheckinData:
    """``full`` restricted to a train fraction (with_train_fraction); DataError naming ``key`` when the draw
    keeps no train target: every learned model would train on nothing, and the run exited 0."""
    data = with_train_fraction(full, fraction, unit, seed)
    if len(data.splits["train"]) == 0 < len(full.splits["train"]):
        raise DataError(f"{key}: a fraction of {fraction:g} (unit {unit}, seed {seed}) keeps none of the "
                        f"{len(full.splits['train']):,} train targets of {full.source}: raise it")
    return data


def _processed(cfg: DataConfig) -> CheckinData:
    """The protocol's processed data, read from or written to the cache."""
    files = input_files(cfg)
    source = SOURCES[cfg.source]
    if not cfg.use_cache:
        return preprocess(source.read(files, cfg), cfg)
    path = cache_dir(cfg) / f"{cfg.source}-{cache_key(cfg, files)}.npz"
    if path.is_file():
        try:
            data = read_cache(path)
            log.info("loaded processed data from cache %s", path)
            return data
        except StaleCache as e:
            log.warning("processed-data cache %s is not usable (%s): rebuilding it", path, e)
    check_writable(path.parent, "data.cache_dir", "or data.use_cache=false")  # before the preprocessing
    data = preprocess(source.read(files, cfg), cfg)
    try:
        write_cache(path, data)
        log.info("cached processed data at %s", path)
    except OSError as e:
        log.warning("could not write the processed-data cache %s (%s); continuing without it: free space "
                    "there, set data.cache_dir elsewhere, or data.use_cache=false", path, e)
    return data
