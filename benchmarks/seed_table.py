"""One RecPIE config's seeds side by side, from the run folders that hold them (a run per seed, or one run
of several): per seed and over the seeds, RecPIE minus its control, own minus another sample's explanation,
own minus the null one and RecPIE minus the warm backbone, test MRR (and Acc@1 for RecPIE minus control),
each with its 95% paired bootstrap CI. The last columns are the seeds' mean +- std of the per-seed
differences and the CI of the seed-mean per-sample difference (the project's multi-seed protocol:
``paired_bootstrap_ci`` on [S, N] ranks), so a three-seed claim has one interval, not three.

    python benchmarks/seed_table.py docs/results/nyc_recpie_3pct_readout_habit \\
        docs/results/nyc_recpie_3pct_readout_habit_seed1 docs/results/nyc_recpie_3pct_readout_habit_seed2
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: this tree's benchmarks package

from benchmarks.compare_runs import gather  # noqa: E402
from recpie.evaluation.bootstrap import paired_bootstrap_ci  # noqa: E402
from recpie.evaluation.tables import ci_text, markdown_table  # noqa: E402

# (row name, rank array of a, rank array of b, metric): a minus b; the arrays the recpie recipe saves
DIFFERENCES = (
    ("RecPIE minus control, MRR", "recpie", "control", "mrr"),
    ("RecPIE minus control, Acc@1", "recpie", "control", "acc@1"),
    ("own minus another sample's explanation, MRR", "recpie", "other", "mrr"),
    ("own minus the null explanation, MRR", "recpie", "null", "mrr"),
    ("RecPIE minus the warm backbone, MRR", "recpie", "backbone", "mrr"),
)


def seed_rows(seeds: dict[int, dict[str, np.ndarray]], n_boot: int) -> list[list[str]]:
    """One row per difference the runs hold: per seed a minus b [CI], then mean +- std of those, then the CI
    of the seed-mean per-sample difference."""
    rows = []
    for name, a, b, metric in DIFFERENCES:
        if not all(a in s and b in s for s in seeds.values()):
            continue
        per_seed = [paired_bootstrap_ci(s[a], s[b], metric, n_boot) for s in seeds.values()]
        diffs = np.array([ci.diff for ci in per_seed])
        pooled = paired_bootstrap_ci(np.stack([s[a] for s in seeds.values()]),
                                     np.stack([s[b] for s in seeds.values()]), metric, n_boot)
        spread = f"{diffs.mean():+.4f} +- {diffs.std(ddof=1):.4f}" if len(diffs) > 1 else f"{diffs[0]:+.4f}"
        rows.append([name, *(ci_text(ci) for ci in per_seed), spread, ci_text(pooled)])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", type=Path, nargs="+", help="recpie run folders of one config (their seeds pooled)")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    args = ap.parse_args(argv)
    seeds = gather(args.runs)
    n = len(next(iter(seeds.values()))["ids"])
    header = [f"{n} test samples, a minus b [95% paired CI]", *(f"seed {s}" for s in seeds),
              "mean +- std over seeds", "seed-mean per sample [95% CI]"]
    print(markdown_table(header, seed_rows(seeds, args.bootstrap)))


if __name__ == "__main__":
    main()
