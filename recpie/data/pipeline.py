"""The preprocessing protocol of ``shared/DESIGN.md`` ("Data protocol"), the same for every source.

raw rows -> (optional) collapse of consecutive repeats -> iterative k-core until stable -> trajectories
split at gaps > session_gap_hours, short ones dropped -> global t80/t90 cut -> train targets and
val/test samples (user and POI seen in train) -> histories strictly before each target.
"""
from __future__ import annotations

import logging

import numpy as np

from recpie.data.catalogue import build_catalogue
from recpie.data.config import DataConfig
from recpie.data.raw import RawCheckins
from recpie.data.rawio import DataError
from recpie.data.types import CheckinData, SampleSet, trajectory_ends

log = logging.getLogger(__name__)


def _codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct values and each row's index into them."""
    uniq, inverse = np.unique(values, return_inverse=True)
    return uniq, inverse.ravel().astype(np.int64)


def k_core(user: np.ndarray, poi: np.ndarray, min_user: int, min_poi: int) -> np.ndarray:
    """Boolean mask of the largest check-in subset where every POI and user has enough check-ins."""
    keep = np.ones(len(user), dtype=bool)
    while True:
        poi_ok = np.bincount(poi[keep], minlength=poi.max() + 1) >= min_poi
        user_ok = np.bincount(user[keep], minlength=user.max() + 1) >= min_user
        new_keep = keep & poi_ok[poi] & user_ok[user]
        if new_keep.sum() == keep.sum():
            return keep
        keep = new_keep


def _duplicates(user: np.ndarray, venue: np.ndarray, time: np.ndarray) -> np.ndarray:
    """bool [n]: the row repeats an earlier row's (user, venue, second) exactly (an export artefact: it
    would count twice in the k-core filter and become a zero-gap step)."""
    _, first = np.unique(np.stack([user, venue, time]), axis=1, return_index=True)
    repeated = np.ones(len(user), dtype=bool)
    repeated[first] = False
    return repeated


def _trajectory_ids(user: np.ndarray, time: np.ndarray, gap_s: float) -> np.ndarray:
    """Trajectory index per check-in (rows sorted by user, time): a new one at a new user or a long gap."""
    starts = np.ones(len(user), dtype=bool)
    starts[1:] = (user[1:] != user[:-1]) | (time[1:] - time[:-1] > gap_s)
    return np.cumsum(starts) - 1


def _fail_if_empty(n: int, step: str, cfg: DataConfig, raw: RawCheckins) -> None:
    if n == 0:
        raise DataError(
            f"{raw.files[0]}: no check-ins left after {step} (min_user_checkins={cfg.min_user_checkins}, "
            f"min_poi_checkins={cfg.min_poi_checkins}, session_gap_hours={cfg.session_gap_hours}, "
            f"min_trajectory_len={cfg.min_trajectory_len}); lower these thresholds or use a larger file"
        )


def preprocess(raw: RawCheckins, cfg: DataConfig) -> CheckinData:
    """Apply the protocol to raw rows; ``cfg`` must be resolved (``config.resolve``)."""
    user_names, user = _codes(raw.user)
    venue_names, venue = _codes(raw.venue)
    order = np.lexsort((np.arange(len(raw)), raw.time, user))  # by user, time, then file order
    repeated = _duplicates(user, venue, raw.time)
    rows = order[~repeated[order]] if cfg.drop_duplicates else order
    if cfg.collapse_repeats:
        repeat = (user[rows][1:] == user[rows][:-1]) & (venue[rows][1:] == venue[rows][:-1])
        rows = rows[np.concatenate([[True], ~repeat])]
    rows = rows[k_core(user[rows], venue[rows], cfg.min_user_checkins, cfg.min_poi_checkins)]
    _fail_if_empty(len(rows), "the k-core filter", cfg, raw)

    traj = _trajectory_ids(user[rows], raw.time[rows], cfg.session_gap_hours * 3600)
    traj_len = np.bincount(traj)
    long_enough = traj_len[traj] >= cfg.min_trajectory_len
    rows, traj = rows[long_enough], traj[long_enough]
    _fail_if_empty(len(rows), "dropping short trajectories", cfg, raw)
    _, traj = _codes(traj)

    kept_users, u = _codes(user[rows])
    kept_venues, p = _codes(venue[rows])
    time = raw.time[rows]
    sorted_times = np.sort(time)
    n = len(rows)
    t80, t90 = int(sorted_times[int(cfg.val_cut * n)]), int(sorted_times[int(cfg.test_cut * n)])
    user_start = np.searchsorted(u, np.arange(len(kept_users) + 1))

    splits = _samples(u, p, time, traj, user_start, t80, t90)
    data = CheckinData(
        source=raw.source,
        user_ids=[str(x) for x in user_names[kept_users]],
        catalogue=build_catalogue(raw, venue, venue_names[kept_venues], kept_venues),
        user=u, poi=p, time=time, utc_offset_min=raw.offset_min[rows].astype(np.int32),
        trajectory=traj, user_start=user_start, t80=t80, t90=t90, splits=splits,
        skipped_lines=raw.skipped_lines, duplicate_checkins=int(repeated.sum()),
    )
    for name, s in splits.items():
        if len(s) == 0:
            raise DataError(f"{raw.files[0]}: the {name} split has no samples after preprocessing; "
                            "lower the filter thresholds or check the cut fractions")
    log.info("%s: %d users, %d POIs, %d check-ins, %d trajectories, samples %s", raw.source,
             data.num_users, data.num_pois, n, traj.max() + 1, {k: len(s) for k, s in splits.items()})
    return data


def _samples(u: np.ndarray, p: np.ndarray, time: np.ndarray, traj: np.ndarray, user_start: np.ndarray,
             t80: int, t90: int) -> dict[str, SampleSet]:
    """Train targets (not a trajectory's first, t < t80) and val/test samples (a trajectory's last)."""
    first = np.ones(len(traj), dtype=bool)
    first[1:] = traj[1:] != traj[:-1]
    last = trajectory_ends(traj)
    train = time < t80
    seen_user = np.zeros(len(user_start) - 1, dtype=bool)
    seen_user[u[train]] = True
    seen_poi = np.zeros(p.max() + 1, dtype=bool)
    seen_poi[p[train]] = True
    known = seen_user[u] & seen_poi[p]
    targets = {
        "train": np.flatnonzero(~first & train),
        "val": np.flatnonzero(last & known & (time >= t80) & (time < t90)),
        "test": np.flatnonzero(last & known & (time >= t90)),
    }
    # history = the user's check-ins strictly before the target's time: search the (user, time) key
    key = u * (1 << 34) + (time - time.min())
    return {name: SampleSet(target=t, history_end=np.searchsorted(key, key[t], side="left"))
            for name, t in targets.items()}
