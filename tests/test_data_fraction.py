"""The training fraction (recpie/data/fraction.py) on real NYC: seeded, nested, never touching val/test or
the histories, and every trained part's supervision drawn from the kept targets only."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from data_modules.batches import IGNORE, WindowDataset
from recpie.components.baselines import Markov
from recpie.data.config import resolve
from recpie.data.fraction import kept_summary, with_train_fraction
from recpie.data.load import load_checkin_data
from recpie.data.stats import stats_table
from recpie.models.cycle_sampler import explainable_train_ids


@pytest.fixture(scope="module")
def twelve(nyc_data):
    return with_train_fraction(nyc_data, 0.12, "targets", seed=0)


def test_the_draw_is_seeded_reproducible_and_nested(nyc_data, twelve):
    again = with_train_fraction(nyc_data, 0.12, "targets", seed=0)
    assert np.array_equal(twelve.supervised, again.supervised)
    other = with_train_fraction(nyc_data, 0.12, "targets", seed=1)
    assert not np.array_equal(twelve.supervised, other.supervised)
    three = with_train_fraction(nyc_data, 0.03, "targets", seed=0)
    assert not (three.supervised & ~twelve.supervised).any()  # what 3% keeps, 12% keeps too
    steps = kept_summary(twelve)
    assert steps["train_steps"] == 81_422 and 0.11 < steps["train_steps_kept"] / steps["train_steps"] < 0.13
    assert with_train_fraction(nyc_data, 1.0, "targets", seed=0) is nyc_data


def test_val_test_and_histories_are_untouched(nyc_data, twelve):
    for split in ("val", "test"):
        assert np.array_equal(twelve.splits[split].target, nyc_data.splits[split].target)
        assert np.array_equal(twelve.splits[split].history_end, nyc_data.splits[split].history_end)
    for name in ("user", "poi", "time", "trajectory", "user_start"):
        assert np.array_equal(getattr(twelve, name), getattr(nyc_data, name))
    kept = twelve.splits["train"]
    assert 0 < len(kept) < len(nyc_data.splits["train"])
    # a kept train sample's history is the same slice as before: every earlier check-in stays in it
    full = dict(zip(nyc_data.splits["train"].target.tolist(), nyc_data.splits["train"].history_end.tolist(),
                    strict=True))
    assert all(full[t] == e for t, e in zip(kept.target.tolist(), kept.history_end.tolist(), strict=True))


def test_every_trained_part_sees_only_kept_targets(nyc_data, twelve):
    keep = twelve.supervised
    assert keep[twelve.splits["train"].target].all()  # joint phase, warm-up, rollouts, refreshes
    assert keep[twelve.splits["train"].target[explainable_train_ids(twelve).numpy()]].all()
    for mode in ("all_steps", "protocol"):  # the backbone's train windows
        ds = WindowDataset(twelve, 16, mode)
        rows = ds.__getitems__(list(range(len(ds))))
        targets = rows["_next"][rows["target"] != IGNORE]
        assert len(targets) and keep[targets].all()
        assert not (rows["train_step"] & ~keep[rows["_next"]]).any()
    trans = twelve.train_transitions()  # Markov and the backbone's transition prior
    steps = twelve.train_steps()
    assert keep[np.flatnonzero(steps) + 1].all() and trans.count.sum() == steps.sum()
    assert trans.count.sum() < nyc_data.train_transitions().count.sum() * 0.15
    assert np.array_equal(Markov().fit(twelve).pop, Markov().fit(nyc_data).pop)  # popularity: training-free


def test_users_unit_keeps_whole_users(nyc_data):
    data = with_train_fraction(nyc_data, 0.25, "users", seed=0)
    per_user = [np.unique(data.supervised[data.user == u]) for u in range(data.num_users)]
    assert all(len(v) == 1 for v in per_user)
    share = np.mean([v[0] for v in per_user])
    assert 0.2 < share < 0.3


def test_config_keys_fail_naming_the_key_and_data_stats_says_what_was_kept(nyc_datamodule_config):
    for key, value in (("train_fraction", 0.0), ("train_fraction", 1.5), ("train_fraction_unit", "rows")):
        with pytest.raises(ValueError, match=f"data.{key}"):
            resolve(dataclasses.replace(nyc_datamodule_config, **{key: value}))
    data = load_checkin_data(dataclasses.replace(nyc_datamodule_config, train_fraction=0.03))
    assert "| train fraction | 0.03 of the targets (seed 0):" in stats_table(data)
    assert "| train fraction | all:" in stats_table(load_checkin_data(nyc_datamodule_config))
