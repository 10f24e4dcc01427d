"""A Markdown summary of processed check-ins (``python -m recpie data stats <experiment>``)."""
from __future__ import annotations

from datetime import datetime, timezone

import numpy as np

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
