"""NYC TSMC2014 end to end: the protocol's exact counts, no leakage, the catalogue and the cache."""
from __future__ import annotations

import collections
import dataclasses
import time
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)

from recpie.data import load
from recpie.data.config import resolve
from recpie.data.sources import SOURCES, Source
from recpie.data.stats import stats_table


def test_nyc_counts_match_the_protocol(nyc_data):
    d = nyc_data
    assert (d.num_users, d.num_pois, len(d.time)) == (1054, 3962, 103074)
    assert d.trajectory.max() + 1 == 19560
    assert {k: len(s) for k, s in d.splits.items()} == {"train": 67317, "val": 2129, "test": 2096}
    never_in_train = np.setdiff1d(np.arange(d.num_pois), d.poi[d.train_mask()])
    assert len(never_in_train) == 57
    assert d.skipped_lines == 0


def test_no_leakage(nyc_data):
    d = nyc_data
    assert np.all(np.diff(d.time)[np.diff(d.user) == 0] >= 0), "check-ins not sorted by (user, time)"
    assert np.all(d.time[d.splits["train"].target] < d.t80)
    val, test = d.time[d.splits["val"].target], d.time[d.splits["test"].target]
    assert np.all((val >= d.t80) & (val < d.t90)) and np.all(test >= d.t90)
    train_users, train_pois = set(d.user[d.train_mask()]), set(d.poi[d.train_mask()])
    for split, s in d.splits.items():
        users = d.user[s.target]
        assert np.all(s.history_end <= s.target)
        assert np.all(s.history_end >= d.user_start[users])
        last_history = s.history_end - 1
        has_history = s.history_end > d.user_start[users]
        # the latest history item is strictly earlier than the target, and it is the user's
        assert np.all(d.time[last_history[has_history]] < d.time[s.target[has_history]])
        assert np.all(d.user[last_history[has_history]] == users[has_history])
        # ... and nothing else of the user that is strictly earlier was left out
        nxt = np.minimum(s.history_end, len(d.time) - 1)
        same_user = (d.user[nxt] == users) & (s.history_end < len(d.time))
        assert np.all(d.time[nxt][same_user] >= d.time[s.target][same_user])
        if split != "train":
            assert set(users) <= train_users and set(d.poi[s.target]) <= train_pois


def test_decayed_counter_reproduces_the_design_numbers(nyc_data):
    """The 0.99-decay visit counter with popularity ties: Acc@1 0.2405, Acc@10 0.7075, MRR 0.3974."""
    d = nyc_data
    pop = np.bincount(d.poi[d.train_mask()], minlength=d.num_pois)
    s = d.splits["test"]
    ranks = np.empty(len(s))
    for i in range(len(s)):
        history = d.poi[d.history("test", i)]
        score = np.bincount(history, weights=0.99 ** np.arange(len(history))[::-1], minlength=d.num_pois)
        t = d.poi[s.target[i]]
        higher = (score > score[t]) | ((score == score[t]) & (pop > pop[t]))
        equal = (score == score[t]) & (pop == pop[t])
        ranks[i] = 1 + higher.sum() + (equal.sum() - 1) / 2
    assert (ranks <= 1).mean() == pytest.approx(0.2405, abs=5e-5)
    assert (ranks <= 10).mean() == pytest.approx(0.7075, abs=5e-5)
    assert (1 / ranks).mean() == pytest.approx(0.3974, abs=5e-5)


def test_catalogue_names_and_most_frequent_choices(nyc_data, data_root):
    cat = nyc_data.catalogue
    names = dict(zip(cat.raw_ids, cat.names, strict=True))
    assert names["3fd66200f964a52000e71ee3"] == "Fat Cat"  # first row of poi_metadata_NYC.csv
    assert sum(bool(n) for n in cat.names) > 0.8 * len(cat)
    rows = collections.defaultdict(list)
    with open(data_root / "foursquare_nyc_tsmc2014" / "dataset_TSMC2014_NYC.txt", encoding="latin-1") as f:
        for line in f:
            fields = line.rstrip("\n").split("\t")
            rows[fields[1]].append((fields[3], float(fields[4]), float(fields[5])))
    index = {raw: i for i, raw in enumerate(cat.raw_ids)}
    multi = [v for v in index if len({r[1:] for r in rows[v]}) > 1]
    assert len(multi) > 100
    for venue in multi[:200] + [v for v in index if len({r[0] for r in rows[v]}) > 1][:50]:
        i = index[venue]
        coords = collections.Counter(r[1:] for r in rows[venue]).most_common(1)[0][0]
        assert (cat.lat[i], cat.lon[i]) == coords
        category = collections.Counter(r[0] for r in rows[venue]).most_common(1)[0][0]
        assert cat.category_names[cat.category[i]] == category
    assert cat.category_names[0] == "" and len(cat.category_names) > 150


def test_cache_hit_does_not_read_raw_files(nyc_data, nyc_datamodule_config, monkeypatch):
    def refuse(files, cfg):
        raise AssertionError(f"raw files read on a cache hit: {files}")

    monkeypatch.setitem(SOURCES, "foursquare", Source(SOURCES["foursquare"].input_files, refuse))
    start = time.perf_counter()
    again = load.load_checkin_data(nyc_datamodule_config)
    assert time.perf_counter() - start < 3.0
    assert np.array_equal(again.poi, nyc_data.poi) and again.splits["test"].target.tolist() == \
        nyc_data.splits["test"].target.tolist()
    other = dataclasses.replace(nyc_datamodule_config, min_poi_checkins=5)
    with pytest.raises(AssertionError, match="raw files read"):
        load.load_checkin_data(other)


def test_cache_key_follows_files_and_settings(nyc_datamodule_config, tmp_path):
    cfg = resolve(nyc_datamodule_config)
    copy = tmp_path / "dataset_TSMC2014_NYC.txt"
    copy.write_bytes(load.input_files(cfg)[0].read_bytes()[:4000])
    key = load.cache_key(cfg, [copy])
    assert key == load.cache_key(dataclasses.replace(cfg, batch_size=7, max_len=9), [copy])
    assert key != load.cache_key(dataclasses.replace(cfg, collapse_repeats=True), [copy])
    copy.write_bytes(copy.read_bytes()[:3000])
    assert key != load.cache_key(cfg, [copy])


def test_stats_table(nyc_data):
    table = stats_table(nyc_data)
    assert "| users | 1,054 |" in table and "| test samples | 2,096 |" in table
    assert "| trajectories | 19,560 |" in table and "2012-04-03" in table


def test_local_hour_of_week(nyc_data):
    """Check-in 0 of the file, Tue Apr 03 18:00:09 UTC 2012 at -240 min, is Tuesday 14h local: hour 38."""
    d = nyc_data
    first = np.flatnonzero(d.time == 1333476009)
    assert len(first) and np.all(d.hour_of_week(first) == 24 + 14)
    idx = np.arange(0, len(d.time), 997)
    local = [datetime.fromtimestamp(int(t), timezone.utc) + timedelta(minutes=int(o))
             for t, o in zip(d.time[idx], d.utc_offset_min[idx], strict=True)]
    assert d.hour_of_week(idx).tolist() == [x.weekday() * 24 + x.hour for x in local]
