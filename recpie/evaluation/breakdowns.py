"""Sample groups for breakdowns: revisit vs new-POI targets, and users by activity (train check-ins)."""
from __future__ import annotations

import numpy as np

from recpie.data.types import CheckinData
from recpie.evaluation.ranking import METRIC_NAMES, metrics_from_ranks


def split_targets(data: CheckinData, split: str) -> np.ndarray:
    """The POI to predict for each sample of ``split`` (int64 [m])."""
    if split not in data.splits:
        raise KeyError(f"split {split!r} not in the data (have {sorted(data.splits)})")
    return data.poi[data.splits[split].target]


def revisit_mask(data: CheckinData, split: str) -> np.ndarray:
    """True where the target POI occurs in the sample's history (the user has been there before)."""
    s = data.splits[split]
    users = data.user[s.target]
    targets = data.poi[s.target]
    out = np.empty(len(s), dtype=bool)
    for i, (u, end, t) in enumerate(zip(users, s.history_end, targets, strict=True)):
        out[i] = bool((data.poi[data.user_start[u]:end] == t).any())
    return out


def user_train_activity(data: CheckinData) -> np.ndarray:
    """Check-ins each user has in the train period (int64 [U])."""
    return np.bincount(data.user[data.train_mask()], minlength=data.num_users)


def activity_groups(data: CheckinData, split: str, bins: int = 3) -> dict[str, np.ndarray]:
    """Masks over ``split``'s samples by the user's train activity, cut at quantiles over all users.

    Group names carry the check-in range, e.g. ``"users 10-57 train check-ins"``."""
    activity = user_train_activity(data)
    edges = np.quantile(activity, np.linspace(0, 1, bins + 1)[1:-1])
    user_bin = np.searchsorted(edges, activity, side="right")
    sample_bin = user_bin[data.user[data.splits[split].target]]
    groups = {}
    for b in range(bins):
        members = activity[user_bin == b]
        if len(members):
            groups[f"users {members.min()}-{members.max()} train check-ins"] = sample_bin == b
    return groups


def standard_groups(data: CheckinData, split: str, activity_bins: int = 3) -> dict[str, np.ndarray]:
    """All samples, revisit / new-POI targets, and the activity groups."""
    rev = revisit_mask(data, split)
    groups = {"all": np.ones(len(rev), dtype=bool), "revisit": rev, "new POI": ~rev}
    groups.update(activity_groups(data, split, activity_bins))
    return groups


def breakdown(ranks: np.ndarray, groups: dict[str, np.ndarray],
              names: tuple[str, ...] = METRIC_NAMES) -> dict[str, dict[str, float]]:
    """Metrics per group (ranks ordered by sample id), with the group's sample count under ``"n"``."""
    ranks = np.asarray(ranks)
    out = {}
    for group, mask in groups.items():
        if len(mask) != len(ranks):
            raise ValueError(f"group {group!r} has {len(mask)} entries for {len(ranks)} ranks")
        if mask.any():
            out[group] = {"n": float(mask.sum()), **metrics_from_ranks(ranks[mask], names)}
    return out
