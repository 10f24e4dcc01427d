"""The processed check-in data every model, evaluator and prompt builder reads.

One source-independent representation: check-ins sorted by (user, time), POIs re-indexed
0..P-1 (every POI kept by the filters is ranked, also those never seen in train), and the
three sample sets of the protocol in ``shared/DESIGN.md``. Samples point into the check-in
arrays, so a sample's history is a slice and can never reach its own target's time.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

SECONDS_PER_HOUR = 3600
HOURS_PER_WEEK = 168


def trajectory_ends(trajectory: np.ndarray) -> np.ndarray:
    """bool [n]: check-in i is the last of its trajectory (``trajectory``: each check-in's trajectory id, the
    check-ins sorted by user and time)."""
    last = np.ones(len(trajectory), dtype=bool)
    last[:-1] = trajectory[1:] != trajectory[:-1]
    return last


@dataclass(frozen=True)
class Transitions:
    """Sparse counts of steps between POIs (CSR): the steps out of POI a go to col[crow[a]:crow[a + 1]]."""

    crow: np.ndarray  # int64 [P + 1]
    col: np.ndarray  # int64 [nnz]: destination POI
    count: np.ndarray  # int64 [nnz]
    num_pois: int

    def dense_rows(self, pois: np.ndarray) -> np.ndarray:
        """float64 [len(pois), P]: the counts out of each given POI."""
        pois = np.asarray(pois, dtype=np.int64)
        n = self.crow[pois + 1] - self.crow[pois]
        row = np.repeat(np.arange(len(pois)), n)
        idx = np.repeat(self.crow[pois] - (np.cumsum(n) - n), n) + np.arange(n.sum())
        out = np.zeros((len(pois), self.num_pois))
        out[row, self.col[idx]] = self.count[idx]
        return out


@dataclass(frozen=True)
class PoiCatalogue:
    """What is known about each POI: the text an LLM reads and the features a model embeds."""

    raw_ids: list[str]  # source id per POI index (venue id, gmap_id, SNAP location id)
    names: list[str]  # display name; "" where the source has none
    category: np.ndarray  # int64 [P]: index into category_names of the POI's main category
    category_names: list[str]  # "" at index 0 means "unknown category"
    lat: np.ndarray  # float64 [P]
    lon: np.ndarray  # float64 [P]

    def __len__(self) -> int:
        return len(self.raw_ids)

    def label(self, poi: int) -> str:
        """Human-readable name: the name, else the category, else the raw id."""
        cat = self.category_names[self.category[poi]]
        if self.names[poi]:
            return f"{self.names[poi]} ({cat})" if cat else self.names[poi]
        return cat or f"place {self.raw_ids[poi]}"


@dataclass(frozen=True)
class SampleSet:
    """Prediction requests: predict check-in ``target[i]`` from the user's check-ins before it.

    The history of sample i is the index range ``[user_start[user], history_end[i])`` of the
    check-in arrays: every check-in of that user strictly earlier than the target's time.
    """

    target: np.ndarray  # int64 [m]: index of the target check-in
    history_end: np.ndarray  # int64 [m]: exclusive end of the history slice

    def __len__(self) -> int:
        return len(self.target)


@dataclass(frozen=True)
class CheckinData:
    """Check-ins kept by the filters and trajectory steps, sorted by (user, time)."""

    source: str  # e.g. "foursquare:NYC"
    user_ids: list[str]  # raw user id per user index
    catalogue: PoiCatalogue
    user: np.ndarray  # int64 [n]
    poi: np.ndarray  # int64 [n]
    time: np.ndarray  # int64 [n], UTC seconds since the epoch
    utc_offset_min: np.ndarray  # int32 [n], local time = time + 60 * offset
    trajectory: np.ndarray  # int64 [n], global trajectory index
    user_start: np.ndarray  # int64 [U + 1]: check-ins of user u are [user_start[u], user_start[u+1])
    t80: int  # first second of the val period
    t90: int  # first second of the test period
    splits: dict[str, SampleSet] = field(default_factory=dict)  # "train", "val", "test"
    skipped_lines: int = 0  # malformed input lines skipped under data.on_bad_line=skip
    # bool [n]: check-ins that may be training targets (None: all); see recpie.data.fraction
    supervised: np.ndarray | None = None
    train_fraction: dict | None = None  # the draw behind ``supervised`` (fraction, unit, seed)
    duplicate_checkins: int = 0  # input rows repeating an earlier (user, venue, second); see data.drop_duplicates

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_pois(self) -> int:
        return len(self.catalogue)

    def local_seconds(self, idx: np.ndarray | int) -> np.ndarray:
        return self.time[idx] + 60 * self.utc_offset_min[idx].astype(np.int64)

    def hour_of_week(self, idx: np.ndarray | int) -> np.ndarray:
        """Local hour of the week, 0 = Monday 00h (the epoch fell on a Thursday)."""
        hours = self.local_seconds(idx) // SECONDS_PER_HOUR
        return (hours + 3 * 24) % HOURS_PER_WEEK

    def history(self, split: str, i: int) -> np.ndarray:
        """Check-in indices of sample i's history, oldest first."""
        s = self.splits[split]
        u = self.user[s.target[i]]
        return np.arange(self.user_start[u], s.history_end[i])

    def train_mask(self) -> np.ndarray:
        """Check-ins in the train period (t < t80): all a model may fit on."""
        return self.time < self.t80

    def supervised_targets(self) -> np.ndarray:
        """bool [n]: check-ins a trained model may use as targets (all, unless a train fraction is set)."""
        return np.ones(len(self.poi), dtype=bool) if self.supervised is None else self.supervised

    def ends_trajectory(self, idx: np.ndarray) -> np.ndarray:
        """bool [len(idx)]: check-in idx is the last of its trajectory, as every val and test sample's target
        is (the protocol's accepted look-ahead: a trajectory's end is known once it has ended)."""
        return trajectory_ends(self.trajectory)[np.asarray(idx)]

    def train_steps(self) -> np.ndarray:
        """bool [n]: check-in i -> i + 1 is a step within one trajectory ending in the train period whose
        destination is a kept target (what transition models count); False for the last check-in."""
        steps = np.zeros(len(self.poi), dtype=bool)
        steps[:-1] = ((self.trajectory[1:] == self.trajectory[:-1]) & (self.time[1:] < self.t80)
                      & self.supervised_targets()[1:])
        return steps

    def train_transitions(self) -> Transitions:
        """Counts of train steps from POI a to POI b, sparse (a dense [P, P] table is 20 GB at 50k POIs)."""
        p, steps = self.num_pois, np.flatnonzero(self.train_steps())
        pair, count = np.unique(self.poi[steps] * p + self.poi[steps + 1], return_counts=True)
        crow = np.concatenate([[0], np.cumsum(np.bincount(pair // p, minlength=p))])
        return Transitions(crow, pair % p, count, p)
