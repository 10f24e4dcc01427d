"""Gowalla (SNAP layout, real subset) and Google Local (real meta + the review schema fixture)."""
from __future__ import annotations

import gzip
import shutil
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from recpie.data.config import DataConfig
from recpie.data.load import load_checkin_data

FIXTURES = Path(__file__).parent / "fixtures" / "checkins"


def _checks(d) -> None:
    """Protocol invariants every source must keep."""
    assert np.all(d.time[d.splits["train"].target] < d.t80)
    for s in d.splits.values():
        has = s.history_end > d.user_start[d.user[s.target]]
        assert np.all(d.time[s.history_end[has] - 1] < d.time[s.target[has]])


def test_gowalla_5core(data_root, tmp_path):
    d = load_checkin_data(DataConfig(source="gowalla", data_root=str(data_root), cache_dir=str(tmp_path)))
    # 8 rows repeat an earlier (user, venue, second) and are dropped (before: 38,328 check-ins, 12,814
    # trajectories, 20,443 train targets)
    assert (d.num_users, d.num_pois, len(d.time), d.trajectory.max() + 1) == (6609, 3037, 38318, 12812)
    assert {k: len(s) for k, s in d.splits.items()} == {"train": 20437, "val": 589, "test": 380}
    assert d.duplicate_checkins == 8
    _checks(d)
    cat = d.catalogue
    assert cat.category_names == [""] and not any(cat.names)  # SNAP Gowalla has neither
    assert cat.label(0) == f"place {cat.raw_ids[0]}"
    # local time from the coordinates: San Francisco in October 2010 is on PDT (UTC-7)
    sf = (np.abs(cat.lat[d.poi] - 37.78) < 0.05) & (np.abs(cat.lon[d.poi] + 122.42) < 0.05)
    october = (d.time >= 1285891200) & (d.time < 1288569600)  # 2010-10-01 .. 2010-11-01 UTC
    assert sf.sum() > 100 and np.all(d.utc_offset_min[sf & october] == -420)


def _google_config(folder: Path, meta_dir: str, **overrides) -> DataConfig:
    return DataConfig(source="google_local", city="Vermont", data_root=str(folder.parent),
                      dataset_dir=str(folder), meta_dir=meta_dir, min_poi_checkins=2, min_user_checkins=2,
                      use_cache=False, **overrides)


def test_google_local_real_meta_with_review_fixture(data_root, tmp_path):
    folder = tmp_path / "reviews"
    folder.mkdir()
    reviews = (FIXTURES / "review-Vermont.json").read_bytes()
    (folder / "review-Vermont.json.gz").write_bytes(gzip.compress(reviews))
    d = load_checkin_data(_google_config(folder, str(data_root / "google_local_vermont_meta")))
    assert (d.num_users, d.num_pois, len(d.time), d.trajectory.max() + 1) == (4, 10, 36, 12)
    assert {k: len(s) for k, s in d.splits.items()} == {"train": 18, "val": 1, "test": 2}
    _checks(d)
    cat = d.catalogue
    flynn = cat.raw_ids.index("0x4cca7af82edf7c39:0x2fcb3ea948bbde2c")
    assert cat.label(flynn) == "The Flynn (Live music venue)"  # the first of its categories is the main one
    assert cat.lat[flynn] == pytest.approx(44.4756691)
    # local time from the coordinates: Vermont's zone, EST in winter and EDT in summer
    zone = ZoneInfo("America/New_York")
    expected = [datetime.fromtimestamp(t, zone).utcoffset().total_seconds() / 60 for t in d.time.tolist()]
    assert d.utc_offset_min.tolist() == expected and set(expected) == {-300, -240}


def test_google_local_skipped_lines_reach_the_data(tmp_path):
    folder = tmp_path / "reviews"
    folder.mkdir()
    shutil.copy(FIXTURES / "meta-Vermont.json", folder)
    lines = (FIXTURES / "review-Vermont.json").read_text().splitlines(keepends=True)
    (folder / "review-Vermont.json").write_text("".join(lines[:5] + ["{not json\n"] + lines[5:]))
    d = load_checkin_data(_google_config(folder, "", on_bad_line="skip"))
    assert d.skipped_lines == 1 and len(d.time) == 36
