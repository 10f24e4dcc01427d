"""Torch datasets producing batches of the BATCH SPEC (the contract with the neural recommender).

A batch is a dict of tensors; L = max_len, P = number of POIs (the pad POI id):
  user [B]; poi, hour_of_week, time, mask [B, L] (inputs oldest -> newest, LEFT-padded: poi P, others 0);
  next_hour_of_week, next_time [B, L] (of the check-in to be predicted after each position);
  target [B, L] (POI to predict after each position, -100 where none); sample_id [B] (-1 for train windows).
Both datasets build whole batches at once through ``__getitems__`` (one numpy gather per batch).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from recpie.data.types import CheckinData

IGNORE = -100  # target where nothing is predicted (torch cross-entropy's ignore_index)


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
        "_next": nxt,
        "_has_next": has_next,
    }


def to_tensors(rows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The collate function: the dataset already built the batch; drop helper keys, make tensors."""
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in rows.items() if not k.startswith("_")}


class SampleDataset(Dataset):
    """One row per sample of a split: the last L check-ins of its history, target at position L-1."""

    def __init__(self, data: CheckinData, split: str, max_len: int):
        self.data, self.max_len = data, max_len
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

    def __init__(self, data: CheckinData, max_len: int, train_targets: str):
        self.data, self.max_len = data, max_len
        self.how = data.hour_of_week(np.arange(len(data.poi)))
        self.user, self.start, self.end = train_windows(data, max_len)
        self.is_target = np.ones(len(data.poi), dtype=bool)
        if train_targets == "protocol":
            self.is_target[:] = False
            self.is_target[data.splits["train"].target] = True

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
        return rows
