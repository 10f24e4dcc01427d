"""Two data-efficiency studies side by side: per fraction and seed in both, the backbone's test MRR and
Acc@1 of each and their paired difference (95% bootstrap over the test samples), plus each point's val MRR,
epochs and search setting. For a re-tuned study against the one it replaces (same data, same test samples).

    python benchmarks/compare_studies.py results/nyc_data_efficiency docs/results/nyc_data_efficiency
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from recpie.evaluation.bootstrap import paired_bootstrap_ci
from recpie.evaluation.ranking import metrics_from_ranks
from recpie.evaluation.tables import ci_text, markdown_table
from recpie.reporting.study_points import read_point

POINT = re.compile(r"f([0-9.]+)_seed(\d+)")


def points(study: Path) -> dict[tuple[float, int], tuple[dict, dict]]:
    """(fraction, seed) -> (meta, arrays) of every finished point of a study folder."""
    found = {}
    for done in sorted((study / "points").glob("f*_seed*.json")):
        match = POINT.fullmatch(done.stem)
        point = read_point(study, done.stem) if match else None
        if point:
            found[float(match.group(1)), int(match.group(2))] = point
    return found


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("new", type=Path, help="a data-efficiency study folder")
    ap.add_argument("old", type=Path, help="the study it is compared with")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    args = ap.parse_args(argv)
    new, old = points(args.new), points(args.old)
    rows = []
    for key in sorted(set(new) & set(old)):
        (nm, na), (om, oa) = new[key], old[key]
        n_metrics, o_metrics = (metrics_from_ranks(a["ranks"], ["acc@1", "mrr"]) for a in (na, oa))
        ci = paired_bootstrap_ci(na["ranks"], oa["ranks"], "mrr", args.bootstrap)
        rows.append([f"{key[0]:g}", key[1], f"`{nm.get('setting', '') or 'config'}`",
                     f"{om['best_val_mrr']:.4f} -> {nm['best_val_mrr']:.4f}", f"{om['epochs']} -> {nm['epochs']}",
                     f"{o_metrics['acc@1']:.4f} -> {n_metrics['acc@1']:.4f}",
                     f"{o_metrics['mrr']:.4f} -> {n_metrics['mrr']:.4f}", ci_text(ci)])
    if not rows:
        raise SystemExit(f"no (fraction, seed) point is finished in both {args.new} and {args.old}")
    print(markdown_table(["fraction", "seed", "new setting", "val MRR old -> new", "epochs old -> new",
                          "test Acc@1 old -> new", "test MRR old -> new", "new minus old, test MRR"], rows))


if __name__ == "__main__":
    main()
