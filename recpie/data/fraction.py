"""Training on a share of the supervision: the data-efficiency setting ("f of the training data").

Only *supervision* is withheld: a train-period check-in may be a training target only when it is kept.
Every check-in stays in the histories, the prompts and the training-free baselines; val and test are
untouched. Two readings of the paper's "12% of the training data":

- ``targets``: each train target is kept with probability f (a per-check-in draw);
- ``users``: a share f of the users keep all their train targets, the others none.

The draws are uniforms compared with f under one seed, so the kept sets are nested across fractions
(what 3% keeps, 12% keeps too) and a curve over fractions varies one thing only.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from recpie.data.types import CheckinData, SampleSet


def supervised_mask(data: CheckinData, fraction: float, unit: str, seed: int) -> np.ndarray:
    """bool [n]: the check-ins that may be training targets under the draw (keys checked by
    recpie.data.config.resolve)."""
    rng = np.random.default_rng(seed)
    if unit == "users":
        return (rng.random(data.num_users) < fraction)[data.user]
    return rng.random(len(data.poi)) < fraction


def with_train_fraction(data: CheckinData, fraction: float, unit: str, seed: int) -> CheckinData:
    """``data`` whose train targets and train steps are restricted to a seeded share (1.0: unchanged)."""
    if fraction == 1.0:
        return data
    keep = supervised_mask(data, fraction, unit, seed)
    train = data.splits["train"]
    kept = keep[train.target]
    splits = {**data.splits, "train": SampleSet(train.target[kept], train.history_end[kept])}
    return dataclasses.replace(data, splits=splits, supervised=keep,
                               train_fraction=dict(fraction=fraction, unit=unit, seed=seed))


def supervision_draw(data: CheckinData) -> dict[str, float | str | int]:
    """The draw behind ``data``'s train targets as plain values, {"fraction", "unit", "seed"}; fraction 1.0
    (every target) is one draw whatever the unit and seed. What a checkpoint of a model trained on
    ``data`` records (recpie.utils.checkpoints.DRAW_KEY): a backbone's transition prior is built from the
    kept train steps, so its weights rank as fitted only on data of the same draw."""
    draw = data.train_fraction or {}
    fraction = float(draw.get("fraction", 1.0))
    if fraction == 1.0:
        return dict(fraction=1.0, unit="targets", seed=0)
    return dict(fraction=fraction, unit=str(draw["unit"]), seed=int(draw["seed"]))


def kept_summary(data: CheckinData) -> dict[str, int | float | str]:
    """What a model trained on ``data`` may be supervised by, for data stats, results and provenance."""
    in_train = data.train_mask()
    first = np.zeros(len(data.poi), dtype=bool)
    first[data.user_start[:-1]] = True
    steps = in_train & ~first  # a check-in a train window can predict: not its user's first
    kept = steps & data.supervised_targets()
    return {**supervision_draw(data),
            "train_steps_kept": int(kept.sum()), "train_steps": int(steps.sum()),
            "train_targets_kept": len(data.splits["train"]), "users_with_kept_targets":
            int(len(np.unique(data.user[kept])))}
