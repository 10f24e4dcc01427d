"""The processed-data cache file: numpy arrays and one JSON record in an ``.npz``, nothing that runs code.

Read with ``allow_pickle=False``, so a crafted cache file cannot execute anything, and checked against
the shapes ``CheckinData`` promises; ``read_cache`` raises ``StaleCache`` for a file that is corrupt, of
another version or inconsistent, and the loader then rebuilds it. ``write_cache`` writes atomically.
"""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from recpie.data.types import CheckinData, PoiCatalogue, SampleSet
from recpie.utils.files import atomic_write

FORMAT_VERSION = 2  # bump when CheckinData or the pipeline's output for the same inputs changes
_ARRAYS = ("user", "poi", "time", "utc_offset_min", "trajectory", "user_start")
_CATALOGUE_ARRAYS = ("category", "lat", "lon")


class StaleCache(Exception):
    """The cache file cannot be used (corrupt, another version, inconsistent); rebuild it."""


def write_cache(path: Path, data: CheckinData) -> None:
    """Write ``data`` to ``path`` atomically (recpie.utils.files.atomic_write); OSError on failure."""
    cat = data.catalogue
    record = {"version": FORMAT_VERSION, "source": data.source, "user_ids": data.user_ids, "t80": data.t80,
              "t90": data.t90, "skipped_lines": data.skipped_lines, "duplicate_checkins": data.duplicate_checkins,
              "raw_ids": cat.raw_ids, "names": cat.names, "category_names": cat.category_names,
              "splits": list(data.splits)}
    arrays = {k: getattr(data, k) for k in _ARRAYS}
    arrays.update({f"catalogue_{k}": getattr(cat, k) for k in _CATALOGUE_ARRAYS})
    for name, s in data.splits.items():
        arrays[f"split_{name}_target"], arrays[f"split_{name}_history_end"] = s.target, s.history_end
    arrays["record"] = np.frombuffer(json.dumps(record).encode(), dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))  # a concurrent reader never sees half a file


def read_cache(path: Path) -> CheckinData:
    """The CheckinData in ``path``; StaleCache when it is unreadable, of another version or inconsistent."""
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        record = json.loads(arrays.pop("record").tobytes())
        if record.get("version") != FORMAT_VERSION:
            raise StaleCache(f"format version {record.get('version')}, this code reads {FORMAT_VERSION}")
        cat = PoiCatalogue(
            raw_ids=record["raw_ids"], names=record["names"], category=arrays["catalogue_category"],
            category_names=record["category_names"], lat=arrays["catalogue_lat"], lon=arrays["catalogue_lon"])
        data = CheckinData(
            source=record["source"], user_ids=record["user_ids"], catalogue=cat,
            **{k: arrays[k] for k in _ARRAYS}, t80=int(record["t80"]), t90=int(record["t90"]),
            splits={n: SampleSet(arrays[f"split_{n}_target"], arrays[f"split_{n}_history_end"])
                    for n in record["splits"]},
            skipped_lines=int(record["skipped_lines"]), duplicate_checkins=int(record["duplicate_checkins"]))
    except StaleCache:
        raise
    except (OSError, EOFError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as e:
        raise StaleCache(f"unreadable ({type(e).__name__}: {e})") from None
    _check(data)
    return data


def _check(d: CheckinData) -> None:
    """The shapes and index ranges every consumer relies on."""
    n, users, pois = len(d.time), d.num_users, d.num_pois
    problems = [
        any(len(getattr(d, k)) != n for k in ("user", "poi", "utc_offset_min", "trajectory")),
        len(d.user_start) != users + 1 or (n and int(d.user_start[-1]) != n),
        any(len(getattr(d.catalogue, k)) != pois for k in ("names", "category", "lat", "lon")),
        pois and (d.catalogue.category.min() < 0 or d.catalogue.category.max() >= len(d.catalogue.category_names)),
        n and (d.poi.min() < 0 or d.poi.max() >= pois or d.user.min() < 0 or d.user.max() >= users),
        set(d.splits) != {"train", "val", "test"},
        any(len(s.target) != len(s.history_end) or (len(s) and (s.target.min() < 0 or s.target.max() >= n))
            for s in d.splits.values()),
    ]
    if any(problems):
        raise StaleCache("its arrays are inconsistent")
