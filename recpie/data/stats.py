"""A Markdown summary of processed check-ins (``python -m recpie data stats <experiment>``)."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

from recpie.data.fraction import kept_summary
from recpie.data.types import CheckinData


def _utc(seconds: int) -> str:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).strftime("%Y-%m-%d %H:%M")


def stats_table(data: CheckinData) -> str:
    """Users, POIs, categories, check-ins, trajectories, samples per split and each period's UTC range."""
    t = data.time
    periods = {"train": t < data.t80, "val": (t >= data.t80) & (t < data.t90), "test": t >= data.t90}
    known_categories = len(set(data.catalogue.category.tolist()) - {0})
    rows = [
        ("source", data.source),
        ("users", f"{data.num_users:,}"),
        ("POIs", f"{data.num_pois:,}"),
        ("POIs never in train", f"{data.num_pois - len(np.unique(data.poi[periods['train']])):,}"),
        ("categories", f"{known_categories:,}"),
        ("check-ins", f"{len(t):,}"),
        ("trajectories", f"{int(data.trajectory.max()) + 1:,}"),
        ("skipped input lines", f"{data.skipped_lines:,}"),
        ("train fraction", fraction_line(data)),
        ("duplicate check-ins (same user, venue, second)", f"{data.duplicate_checkins:,}"),
    ]
    for name, in_period in periods.items():
        label = "train targets" if name == "train" else f"{name} samples"
        rows.append((label, f"{len(data.splits[name]):,}"))
        times = t[in_period]
        span = f"{_utc(times.min())} → {_utc(times.max())}" if len(times) else "empty"
        rows.append((f"{name} period (UTC)", f"{span} ({len(times):,} check-ins)"))
    lines = ["| quantity | value |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def fraction_line(data: CheckinData) -> str:
    """What supervision a trained model gets, e.g. '0.12 of the targets (seed 0): 9,771 of 81,405 ...'."""
    k = kept_summary(data)
    share = "all" if k["fraction"] == 1.0 else f"{k['fraction']} of the {k['unit']} (seed {k['seed']})"
    return (f"{share}: {k['train_steps_kept']:,} of {k['train_steps']:,} train steps kept as targets, "
            f"{k['train_targets_kept']:,} protocol train targets, {k['users_with_kept_targets']:,} users with one")
