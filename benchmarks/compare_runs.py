"""Two RecPIE runs on the same test samples side by side: each variant's test MRR / Acc@1 in both, and the
paired difference of the first run's minus the second's (95% bootstrap over the samples). For a run against
its twin that differs in one setting (with PPO against the frozen explainer it starts from; the backbone kept
against the two-cycle run), per seed found in both.

    python benchmarks/compare_runs.py results/nyc_recpie_3pct_readout_ppo docs/results/nyc_recpie_3pct_readout
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from recpie.evaluation.bootstrap import paired_bootstrap_ci
from recpie.evaluation.ranking import metrics_from_ranks
from recpie.evaluation.tables import ci_text, markdown_table

RANKS = re.compile(r"test_ranks_seed(\d+)")
VARIANTS = ("backbone", "control", "recpie", "null", "other")  # the rank arrays the recpie recipe saves


def run_ranks(run: Path) -> dict[int, dict[str, np.ndarray]]:
    """seed -> {variant or "ids": array} of every test_ranks_seed{S}.npz of a run folder (no pickles)."""
    found = {}
    for path in sorted(run.glob("test_ranks_seed*.npz")):
        match = RANKS.fullmatch(path.stem)
        if match:
            with np.load(path, allow_pickle=False) as saved:
                found[int(match.group(1))] = {k: saved[k] for k in ("ids", *VARIANTS) if k in saved.files}
    if not found:
        raise SystemExit(f"{run}: no test_ranks_seed*.npz (a finished recpie run folder has one per seed)")
    return found


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray], variants: list[str], n_boot: int) -> list[list]:
    """Rows [variant, Acc@1 b -> a, MRR b -> a, a minus b MRR (CI)] of one seed, the samples paired by id."""
    if not np.array_equal(a["ids"], b["ids"]):
        raise SystemExit("the two runs scored different test samples (their ids differ): not a paired comparison")
    rows = []
    for name in variants:
        if name in a and name in b:
            ma, mb = (metrics_from_ranks(x[name], ["acc@1", "mrr"]) for x in (a, b))
            rows.append([name, f"{mb['acc@1']:.4f} -> {ma['acc@1']:.4f}", f"{mb['mrr']:.4f} -> {ma['mrr']:.4f}",
                         ci_text(paired_bootstrap_ci(a[name], b[name], "mrr", n_boot))])
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="a recpie run folder")
    ap.add_argument("b", type=Path, help="the run it is compared with (the same test samples)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                    help="which of each run's rank arrays to compare")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    args = ap.parse_args(argv)
    runs_a, runs_b = run_ranks(args.a), run_ranks(args.b)
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        raise SystemExit(f"no seed has test ranks in both {args.a} ({sorted(runs_a)}) and {args.b} ({sorted(runs_b)})")
    rows = [[seed, *row] for seed in seeds
            for row in compare(runs_a[seed], runs_b[seed], args.variants, args.bootstrap)]
    print(markdown_table(["seed", "variant", f"Acc@1 {args.b.name} -> {args.a.name}", "MRR", "a minus b, MRR"],
                         rows))


if __name__ == "__main__":
    main()
