"""Non-neural baselines: fit on the train period, score a split's samples over all POIs.

Every model breaks its own ties by train popularity (count of train check-ins), lexicographically:
popularity only orders POIs whose primary scores are exactly equal. Remaining ties go to the
evaluator's tie rule. All are deterministic (no seed).
"""
from __future__ import annotations

import numpy as np

from recpie.data.types import CheckinData
from recpie.data.visit_weights import hour_gap, hour_kernel


def lexicographic_scores(primary: np.ndarray, secondary: np.ndarray) -> np.ndarray:
    """Scores [b, P] ordering items by ``primary`` [b, P], then ``secondary`` [P]; equal pairs stay tied."""
    b, p = primary.shape
    sec = np.broadcast_to(secondary, (b, p))
    order = np.lexsort((sec, primary), axis=-1)
    sp = np.take_along_axis(primary, order, -1)
    ss = np.take_along_axis(sec, order, -1)
    new_key = np.ones((b, p), dtype=bool)
    new_key[:, 1:] = (sp[:, 1:] != sp[:, :-1]) | (ss[:, 1:] != ss[:, :-1])
    dense = np.cumsum(new_key, axis=1).astype(np.float64)
    out = np.empty((b, p))
    np.put_along_axis(out, order, dense, -1)
    return out


def train_popularity(data: CheckinData) -> np.ndarray:
    """Train check-ins per POI (float64 [P])."""
    return np.bincount(data.poi[data.train_mask()], minlength=data.num_pois).astype(np.float64)


def _histories(data: CheckinData, split: str, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flattened histories of the given samples: (row within chunk, check-in index, age in check-ins)."""
    s = data.splits[split]
    starts = data.user_start[data.user[s.target[rows]]]
    ends = s.history_end[rows]
    lengths = ends - starts
    row = np.repeat(np.arange(len(rows)), lengths)
    offset = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    idx = np.repeat(starts, lengths) + offset
    age = np.repeat(ends, lengths) - 1 - idx  # 0 = the latest check-in before the target
    return row, idx, age


class MostPopular:
    """Train popularity, the same for every sample."""

    name = "most popular"

    def fit(self, data: CheckinData) -> MostPopular:
        self.pop = train_popularity(data)
        return self

    def score(self, data: CheckinData, split: str, rows: np.ndarray) -> np.ndarray:
        return np.tile(self.pop, (len(rows), 1))


class DecayedCounter:
    """Per-user visit counter over the whole history: sum of ``decay ** age`` per POI (age in check-ins).

    With ``bandwidth_h`` set it is time-aware: each past visit is also weighted by
    ``exp(-d^2 / (2 bandwidth_h^2))``, d = circular distance (hours) between its local hour of day
    and the sample's (the request time, known in advance)."""

    def __init__(self, decay: float = 0.99, bandwidth_h: float | None = None, name: str | None = None):
        if not 0 < decay <= 1:
            raise ValueError(f"decay must lie in (0, 1], got {decay}")
        self.decay, self.bandwidth_h = decay, bandwidth_h
        kind = "time-aware counter" if bandwidth_h else "counter"
        bw = f", bandwidth {bandwidth_h} h" if bandwidth_h else ""
        self.name = name or f"{kind} (decay {decay}{bw})"

    def fit(self, data: CheckinData) -> DecayedCounter:
        self.pop = train_popularity(data)
        return self

    def score(self, data: CheckinData, split: str, rows: np.ndarray) -> np.ndarray:
        row, idx, age = _histories(data, split, rows)
        weight = self.decay ** age.astype(np.float64)
        if self.bandwidth_h:
            hour = data.hour_of_week(idx) % 24
            request = (data.hour_of_week(data.splits[split].target[rows]) % 24)[row].astype(np.float64)
            weight = weight * hour_kernel(hour_gap(hour, request), self.bandwidth_h)
        p = data.num_pois
        counts = np.bincount(row * p + data.poi[idx], weights=weight, minlength=len(rows) * p)
        return lexicographic_scores(counts.reshape(len(rows), p), self.pop)


class Markov:
    """First-order transitions from the last history POI, counted within train trajectories."""

    name = "markov (1st order)"

    def fit(self, data: CheckinData) -> Markov:
        self.pop = train_popularity(data)
        self.trans = data.train_transitions()
        return self

    def score(self, data: CheckinData, split: str, rows: np.ndarray) -> np.ndarray:
        s = data.splits[split]
        ends = s.history_end[rows]
        has = ends > data.user_start[data.user[s.target[rows]]]
        primary = np.zeros((len(rows), data.num_pois))
        primary[has] = self.trans.dense_rows(data.poi[ends[has] - 1])
        return lexicographic_scores(primary, self.pop)

