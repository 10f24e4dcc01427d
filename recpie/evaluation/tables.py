"""Markdown tables for metrics, mean +- std over seeds, breakdowns and bootstrap CIs."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from recpie.evaluation.bootstrap import PairedCI
from recpie.evaluation.ranking import METRIC_NAMES


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; floats printed with 4 decimals."""
    def cell(v: object) -> str:
        return f"{v:.4f}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def metrics_table(results: Mapping[str, Mapping[str, float]], names: Sequence[str] = METRIC_NAMES,
                  first: str = "model") -> str:
    """One row per key of ``results`` (a model, a seed, a group), one column per metric."""
    extra = ["n"] if any("n" in m for m in results.values()) else []
    header = [first, *extra, *names]
    rows = [[key, *(int(m["n"]) for _ in extra), *(m[n] for n in names)] for key, m in results.items()]
    return markdown_table(header, rows)


def mean_std_table(runs: Mapping[str, Sequence[Mapping[str, float]]],
                   names: Sequence[str] = METRIC_NAMES) -> str:
    """Mean +- sample std (ddof 1) over seeds per model; "+- 0" for a single (deterministic) run."""
    rows = []
    for model, per_seed in runs.items():
        cells = []
        for n in names:
            v = np.array([m[n] for m in per_seed])
            cells.append(f"{v.mean():.4f} +- {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}")
        rows.append([model, len(per_seed), *cells])
    return markdown_table(["model", "seeds", *names], rows)


def ci_interval(ci: PairedCI) -> str:
    """"[low, high]" with signs: the one way every report prints a paired CI's interval."""
    return f"[{ci.low:+.4f}, {ci.high:+.4f}]"


def ci_text(ci: PairedCI) -> str:
    """"+diff [low, high]": a paired difference and its CI in running text or a table cell."""
    return f"{ci.diff:+.4f} {ci_interval(ci)}"


def ci_table(cis: Sequence[PairedCI]) -> str:
    """Paired bootstrap CIs of metric differences; a star marks an interval that excludes zero."""
    rows = [[c.metric, c.diff, ci_interval(c), "*" if c.excludes_zero else ""] for c in cis]
    level = f"{100 * cis[0].level:.0f}% CI" if cis else "CI"
    return markdown_table(["metric", "difference", level, "excludes 0"], rows)
