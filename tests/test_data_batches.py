"""The BATCH SPEC on real NYC data: shapes, padding, targets, next-step times, determinism."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from data_fixtures import *  # noqa: F403 (session fixtures nyc_data, nyc_datamodule_config)

from data_modules import CheckinDataModule

KEYS = {"user", "poi", "hour_of_week", "time", "mask", "next_hour_of_week", "next_time", "target", "train_step",
        "sample_id"}


def _module(cfg, **overrides) -> CheckinDataModule:
    """The base spec (the hist_* summary has its own tests in test_rec_full_history.py)."""
    dm = CheckinDataModule(dataclasses.replace(cfg, **{"history_summary": False, **overrides}))
    dm.setup()
    return dm


def _cat(loader) -> dict[str, torch.Tensor]:
    batches = list(loader)
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def _check_common(b: dict[str, torch.Tensor], num_pois: int, max_len: int) -> None:
    assert set(b) == KEYS
    for k, v in b.items():
        assert v.dtype == (torch.bool if k in ("mask", "train_step") else torch.int64), k
        assert v.shape[1:] == (() if k in ("user", "sample_id") else (max_len,)), k
    m = b["mask"]
    assert torch.all(m[:, 1:] | ~m[:, :-1]), "inputs must be left-padded"
    assert torch.all((b["poi"] == num_pois) == ~m)
    for k in ("hour_of_week", "time"):
        assert torch.all(b[k][~m] == 0)
    assert b["hour_of_week"].max() < 168 and b["next_hour_of_week"].max() < 168
    inner = m[:, :-1]
    assert torch.all(b["next_time"][:, :-1][inner] == b["time"][:, 1:][inner])
    assert torch.all(b["next_hour_of_week"][:, :-1][inner] == b["hour_of_week"][:, 1:][inner])


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_sample_batches(nyc_data, nyc_datamodule_config, split):
    d, max_len = nyc_data, 20
    dm = _module(nyc_datamodule_config, max_len=max_len)
    b = _cat(dm.sample_dataloader(split))
    s = d.splits[split]
    _check_common(b, d.num_pois, max_len)
    assert b["sample_id"].tolist() == list(range(len(s)))
    assert torch.all(b["target"][:, :-1] == -100)
    assert np.array_equal(b["target"][:, -1].numpy(), d.poi[s.target])
    assert np.array_equal(b["next_time"][:, -1].numpy(), d.time[s.target])
    assert np.array_equal(b["next_hour_of_week"][:, -1].numpy(), d.hour_of_week(s.target))
    assert np.array_equal(b["user"].numpy(), d.user[s.target])
    # the inputs are the most recent max_len check-ins of the history, all strictly before the target
    for i in np.random.default_rng(0).choice(len(s), 50, replace=False):
        history = d.history(split, i)[-max_len:]
        n = len(history)
        assert b["mask"][i].sum() == n
        assert np.array_equal(b["poi"][i, max_len - n:].numpy(), d.poi[history])
        assert np.all(b["time"][i, max_len - n:].numpy() < d.time[s.target[i]])


def test_train_windows_cover_every_train_step_once(nyc_data, nyc_datamodule_config):
    d, max_len = nyc_data, 16
    b = _cat(_module(nyc_datamodule_config, max_len=max_len).train_dataloader())
    _check_common(b, d.num_pois, max_len)
    assert torch.all(b["sample_id"] == -1)
    has_target = b["target"] != -100
    assert torch.all(b["mask"][has_target])
    assert torch.all(b["next_time"][has_target] < d.t80)
    assert torch.all(b["target"][:, -1] != -100), "the newest input always has a next step"
    # the targets are exactly the train-period check-ins but each user's first, each once
    train = np.flatnonzero(d.train_mask())
    expected = train[train != d.user_start[d.user[train]]]
    got = np.stack([b["user"][:, None].expand_as(b["target"])[has_target].numpy(),
                    b["next_time"][has_target].numpy(), b["target"][has_target].numpy()])
    want = np.stack([d.user[expected], d.time[expected], d.poi[expected]])
    assert np.array_equal(got[:, np.lexsort(got[::-1])], want[:, np.lexsort(want[::-1])])


def test_protocol_train_windows_target_only_train_targets(nyc_data, nyc_datamodule_config):
    b = _cat(_module(nyc_datamodule_config, train_targets="protocol").train_dataloader())
    assert (b["target"] != -100).sum() == len(nyc_data.splits["train"]) == 67317


def test_train_order_is_deterministic_for_a_seed(nyc_datamodule_config):
    first = [next(iter(_module(nyc_datamodule_config, seed=s).train_dataloader()))["user"] for s in (1, 1, 2)]
    assert torch.equal(first[0], first[1]) and not torch.equal(first[0], first[2])
