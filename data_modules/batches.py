"""Torch datasets producing batches of the BATCH SPEC (the contract with the neural recommender).

A batch is a dict of tensors; L = max_len, P = number of POIs (the pad POI id):
  user [B]; poi, hour_of_week, time, mask [B, L] (inputs oldest -> newest, LEFT-padded: poi P, others 0);
  next_hour_of_week, next_time [B, L] (of the check-in to be predicted after each position);
  target [B, L] (POI to predict after each position, -100 where none); sample_id [B] (-1 for train windows);
  train_step [B, L] (the step from each input to the check-in after it is a counted train-period step, see
  CheckinData.train_steps: the backbone's transition prior leaves that step's own count out).
With ``history_summary`` on (data.history_summary), also a summary of the user's check-ins BEFORE the
row's first input (the part of the full history that the window truncates), one slot per distinct POI:
  hist_poi [B, M] (P = pad), hist_stats [B, M, S] float32 (HISTORY_STATS below, ages and elapsed days
  relative to the last of those check-ins), hist_time [B] (that check-in's time; 0 if there is none).
Every check-in it summarises precedes the row's first input, hence every target of the row: no leakage.
Both datasets build whole batches at once through ``__getitems__`` (one numpy gather per batch).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from recpie.data.types import CheckinData
from recpie.utils.seeds import phase_seed

IGNORE = -100  # target where nothing is predicted (torch cross-entropy's ignore_index)
# the keys with a position axis [B, L] and their left-padding value (poi pads with the pad POI id, P)
POSITION_KEYS = {"poi": None, "hour_of_week": 0, "time": 0, "mask": False, "next_hour_of_week": 0,
                 "next_time": 0, "target": IGNORE, "train_step": False}
HISTORY_DECAYS = (0.9, 0.99, 0.995)  # hist_stats[..., 1 + j] = sum of HISTORY_DECAYS[j] ** age
HISTORY_TIME_SCALES_DAYS = (7.0, 60.0)  # then sum of exp(-elapsed days / tau)
HISTORY_KERNEL_DECAY = 0.99  # then 48 columns: sum of 0.99 ** age per (weekend?, local hour of day)
HISTORY_STATS = 1 + len(HISTORY_DECAYS) + len(HISTORY_TIME_SCALES_DAYS) + 48  # column 0: visit count


def history_summary(data: CheckinData, how: np.ndarray, user: np.ndarray, start: np.ndarray
                    ) -> dict[str, np.ndarray]:
    """Per row, per distinct POI among the user's check-ins [user_start, start): HISTORY_STATS sums.

    Ages (in check-ins) and elapsed days are relative to check-in ``start - 1``, the latest summarised one."""
    us = data.user_start[user]
    lengths = np.maximum(start - us, 0)
    b, p = len(user), data.num_pois
    row = np.repeat(np.arange(b), lengths)
    idx = np.repeat(us, lengths) + np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ref = np.repeat(start - 1, lengths)
    age = (ref - idx).astype(np.float64)
    days = (data.time[ref] - data.time[idx]).astype(np.float64) / 86400.0
    keys, inv = np.unique(row * p + data.poi[idx], return_inverse=True)
    cols = [np.ones_like(age)] + [d**age for d in HISTORY_DECAYS] + [np.exp(-days / t)
                                                                    for t in HISTORY_TIME_SCALES_DAYS]
    stats = np.stack([np.bincount(inv, weights=c, minlength=len(keys)) for c in cols], -1)
    hour_bin = (how[idx] // 24 >= 5) * 24 + how[idx] % 24
    hours = np.bincount(inv * 48 + hour_bin, weights=HISTORY_KERNEL_DECAY**age, minlength=len(keys) * 48)
    stats = np.concatenate([stats, hours.reshape(len(keys), 48)], -1)
    krow = keys // p
    per_row = np.bincount(krow, minlength=b)
    m = max(1, int(per_row.max(initial=0)))
    slot = np.arange(len(keys)) - (np.cumsum(per_row) - per_row)[krow]
    hist_poi = np.full((b, m), p, dtype=np.int64)
    hist_poi[krow, slot] = keys % p
    hist_stats = np.zeros((b, m, HISTORY_STATS), dtype=np.float32)
    hist_stats[krow, slot] = stats
    hist_time = np.where(lengths > 0, data.time[np.maximum(start - 1, 0)], 0).astype(np.int64)
    return {"hist_poi": hist_poi, "hist_stats": hist_stats, "hist_time": hist_time}


def build_rows(data: CheckinData, how: np.ndarray, user: np.ndarray, start: np.ndarray, end: np.ndarray,
               last_next: np.ndarray, max_len: int) -> dict[str, np.ndarray]:
    """Rows whose inputs are check-ins [start, end) (at most max_len), right-aligned.

    ``how`` is every check-in's local hour of the week. The check-in to predict after input k is
    k + 1, except after the last input: ``last_next``. Targets are filled by the caller.
    """
    pos = np.arange(max_len)[None, :]
    first = (max_len - (end - start))[:, None]  # position of the oldest input
    mask = pos >= first
    idx = np.where(mask, start[:, None] + pos - first, 0)
    is_last = pos == max_len - 1
    nxt = np.where(is_last, last_next[:, None], np.minimum(idx + 1, len(data.poi) - 1))
    has_next = mask | is_last
    return {
        "user": user.astype(np.int64),
        "poi": np.where(mask, data.poi[idx], data.num_pois),
        "hour_of_week": np.where(mask, how[idx], 0),
        "time": np.where(mask, data.time[idx], 0),
        "mask": mask,
        "next_hour_of_week": np.where(has_next, how[nxt], 0),
        "next_time": np.where(has_next, data.time[nxt], 0),
        "train_step": has_next & mask & data.train_steps()[idx] & (nxt == idx + 1),
        "_next": nxt,
        "_has_next": has_next,
    }


def to_tensors(rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The collate function: the dataset already built the batch; drop helper keys, make tensors."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rows.items() if not k.startswith("_")}


class SampleDataset(Dataset):
    """One row per sample of a split: the last L check-ins of its history, target at position L-1."""

    def __init__(self, data: CheckinData, split: str, max_len: int, summary: bool = False):
        self.data, self.max_len, self.summary = data, max_len, summary
        self.how = data.hour_of_week(np.arange(len(data.poi)))
        s = data.splits[split]
        self.target = s.target
        self.user = data.user[s.target]
        self.end = s.history_end
        self.start = np.maximum(data.user_start[self.user], self.end - max_len)

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Row i as a batch of one (numpy); DataLoaders fetch whole batches through ``__getitems__``."""
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> dict[str, np.ndarray]:
        i = np.asarray(indices, dtype=np.int64)
        rows = build_rows(self.data, self.how, self.user[i], self.start[i], self.end[i], self.target[i],
                          self.max_len)
        target = np.full(rows["poi"].shape, IGNORE, dtype=np.int64)
        target[:, -1] = self.data.poi[self.target[i]]
        rows["target"] = target
        rows["sample_id"] = i
        if self.summary:
            rows.update(history_summary(self.data, self.how, self.user[i], self.start[i]))
        return rows


def train_windows(data: CheckinData, max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user, start, end) of each window of up to L+1 train-period check-ins, cut from the newest back.

    Consecutive windows share one check-in, so every train-period step is a target exactly once.
    """
    n_train = np.bincount(data.user[data.train_mask()], minlength=data.num_users)  # a prefix per user
    users, starts, ends = [], [], []
    for u, (us, count) in enumerate(zip(data.user_start[:-1], n_train, strict=True)):
        e = int(us + count)
        while e - us >= 2:
            users.append(u)
            starts.append(max(int(us), e - max_len - 1))
            ends.append(e)
            e -= max_len
    return tuple(np.asarray(x, dtype=np.int64) for x in (users, starts, ends))


class WindowDataset(Dataset):
    """SASRec-style train windows; targets at every step ("all_steps") or only at train targets."""

    def __init__(self, data: CheckinData, max_len: int, train_targets: str, summary: bool = False):
        self.data, self.max_len, self.summary = data, max_len, summary
        self.how = data.hour_of_week(np.arange(len(data.poi)))
        self.user, self.start, self.end = train_windows(data, max_len)
        self.is_target = data.supervised_targets().copy()
        if train_targets == "protocol":
            self.is_target[:] = False
            self.is_target[data.splits["train"].target] = True  # already restricted to the kept ones
        # a window whose steps predict no kept target trains nothing, yet an AdamW step on it still moves the
        # weights (momentum, decay): with 3% of the NYC targets kept, 826 of 2,191 windows are such
        counts = np.concatenate([[0], np.cumsum(self.is_target)])
        has_target = counts[self.end] - counts[self.start + 1] > 0
        self.user, self.start, self.end = self.user[has_target], self.start[has_target], self.end[has_target]

    def __len__(self) -> int:
        return len(self.user)

    def __getitem__(self, i: int) -> dict[str, np.ndarray]:
        """Row i as a batch of one (numpy); DataLoaders fetch whole batches through ``__getitems__``."""
        return self.__getitems__([i])

    def __getitems__(self, indices: list[int]) -> dict[str, np.ndarray]:
        i = np.asarray(indices, dtype=np.int64)
        rows = build_rows(self.data, self.how, self.user[i], self.start[i], self.end[i] - 1, self.end[i] - 1,
                          self.max_len)
        keep = rows["_has_next"] & rows["mask"] & self.is_target[rows["_next"]]
        rows["target"] = np.where(keep, self.data.poi[rows["_next"]], IGNORE)
        rows["sample_id"] = np.full(len(i), -1, dtype=np.int64)
        if self.summary:
            rows.update(history_summary(self.data, self.how, self.user[i], self.start[i]))
        return rows


class StepStream(Sampler[int]):
    """``steps * batch_size`` window indices per epoch, read from one endless stream of shuffled passes over
    the ``n`` windows (pass j shuffled under ``phase_seed(seed, "windows", j)``): an epoch is a fixed number of
    optimizer steps whatever the data size, and epoch k's indices depend on (seed, k) alone, so a run resumed
    at an epoch boundary draws what the uninterrupted one drew. ``set_epoch`` (Lightning calls it, and so does
    the module) says which epoch to draw."""

    def __init__(self, n: int, batch_size: int, steps: int, seed: int):
        if n < 1:
            raise ValueError("StepStream needs at least one window")
        self.n, self.per_epoch, self.seed, self.epoch = n, batch_size * steps, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.per_epoch

    def __iter__(self):
        start = self.epoch * self.per_epoch
        first, last = start // self.n, (start + self.per_epoch - 1) // self.n
        stream = np.concatenate([np.random.default_rng(phase_seed(self.seed, "windows", j)).permutation(self.n)
                                 for j in range(first, last + 1)])
        offset = start - first * self.n
        return iter(stream[offset:offset + self.per_epoch].tolist())
