"""Two RecPIE runs on the same test samples side by side: each variant's test MRR / Acc@1 in both, and the
paired difference of the first run's minus the second's (95% bootstrap over the samples); then the difference
of their content parts (own minus another sample's explanation, MRR: a gain that another sample's explanation
gets as well is not the explanations' content). For a run against its twin that differs in one setting (with
PPO against the frozen explainer it starts from; the backbone kept against the two-cycle run), per seed found
in both. Seeds run in other folders join with ``--also A B`` (a pair per seed); with two seeds or more the
last rows pool them: the seeds' mean metric and the CI of the seed-mean per-sample difference
(``paired_bootstrap_ci`` on [S, N] ranks, as benchmarks/seed_table.py).

    python benchmarks/compare_runs.py results/nyc_recpie_3pct_readout_ppo docs/results/nyc_recpie_3pct_readout
    python benchmarks/compare_runs.py results/ppo docs/results/twin --also results/ppo_s2 results/twin_s2
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from recpie.evaluation.bootstrap import paired_bootstrap_ci, paired_values_ci
from recpie.evaluation.ranking import metrics_from_ranks, per_sample_metric
from recpie.evaluation.tables import ci_text, markdown_table

RANKS = re.compile(r"test_ranks_seed(\d+)")
VARIANTS = ("backbone", "control", "recpie", "null", "other")  # the rank arrays the recpie recipe saves
CONTENT = "recpie minus other"  # the row of own minus another sample's explanation, a's minus b's


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


def gather(runs: list[Path]) -> dict[int, dict[str, np.ndarray]]:
    """seed -> its rank arrays, over every run folder; a seed found twice, or seeds that scored different
    test samples, cannot be pooled and stop the table."""
    seeds: dict[int, dict[str, np.ndarray]] = {}
    where: dict[int, Path] = {}
    for run in runs:
        for seed, arrays in run_ranks(run).items():
            if seed in seeds:
                raise SystemExit(f"seed {seed} is in both {where[seed]} and {run}: pass one run per seed")
            seeds[seed], where[seed] = arrays, run
    first = next(iter(seeds.values()))["ids"]
    for seed, arrays in seeds.items():
        if not np.array_equal(arrays["ids"], first):
            raise SystemExit(f"seed {seed} ({where[seed]}) scored other test samples than the first seed: the "
                             "seeds' per-sample differences cannot be averaged (run every seed on all test samples)")
    return dict(sorted(seeds.items()))


def seed_mean_metrics(ranks: np.ndarray) -> dict[str, float]:
    """Acc@1 and MRR of one seed's ranks [N], or the seeds' mean of them for ranks [S, N]."""
    per_seed = [metrics_from_ranks(r, ["acc@1", "mrr"]) for r in np.atleast_2d(ranks)]
    return {k: float(np.mean([m[k] for m in per_seed])) for k in ("acc@1", "mrr")}


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray], variants: list[str], n_boot: int) -> list[list]:
    """Rows [variant, Acc@1 b -> a, MRR b -> a, a minus b MRR (CI)] of one seed (a and b: a seed's rank arrays,
    [N]) or of several seeds pooled (their arrays stacked, [S, N]: the seeds' mean metric and the CI of the
    seed-mean per-sample difference), the samples paired by id."""
    if not np.array_equal(a["ids"], b["ids"]):
        raise SystemExit("the two runs scored different test samples (their ids differ): not a paired comparison")
    rows = []
    for name in variants:
        if name in a and name in b:
            ma, mb = (seed_mean_metrics(x[name]) for x in (a, b))
            rows.append([name, f"{mb['acc@1']:.4f} -> {ma['acc@1']:.4f}", f"{mb['mrr']:.4f} -> {ma['mrr']:.4f}",
                         ci_text(paired_bootstrap_ci(a[name], b[name], "mrr", n_boot))])
    if "recpie" in variants and all("recpie" in x and "other" in x for x in (a, b)):
        # the content part: own minus another sample's explanation in each run, a's minus b's (a gain that
        # another sample's explanation gets as well is not the explanations' content)
        ca, cb = (np.atleast_2d(per_sample_metric(x["recpie"], "mrr") - per_sample_metric(x["other"], "mrr")).mean(0)
                  for x in (a, b))
        rows.append([CONTENT, "-", f"{cb.mean():+.4f} -> {ca.mean():+.4f}",
                     ci_text(paired_values_ci(ca, cb, "mrr", n_boot))])
    return rows


def stacked(seeds: dict[int, dict[str, np.ndarray]], chosen: list[int]) -> dict[str, np.ndarray]:
    """The chosen seeds' rank arrays stacked [S, N] per variant (those every chosen seed holds), and the ids."""
    names = set.intersection(*(set(seeds[s]) for s in chosen)) - {"ids"}
    return {"ids": seeds[chosen[0]]["ids"], **{k: np.stack([seeds[s][k] for s in chosen]) for k in names}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="a recpie run folder")
    ap.add_argument("b", type=Path, help="the run it is compared with (the same test samples)")
    ap.add_argument("--also", nargs=2, type=Path, action="append", default=[], metavar=("A", "B"),
                    help="another seed's pair of run folders (a's run, then b's); repeat per seed")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                    help="which of each run's rank arrays to compare")
    ap.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    args = ap.parse_args(argv)
    runs_a = gather([args.a, *(pair[0] for pair in args.also)])
    runs_b = gather([args.b, *(pair[1] for pair in args.also)])
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        raise SystemExit(f"no seed has test ranks in both {args.a} ({sorted(runs_a)}) and {args.b} ({sorted(runs_b)})")
    rows = [[seed, *row] for seed in seeds
            for row in compare(runs_a[seed], runs_b[seed], args.variants, args.bootstrap)]
    if len(seeds) > 1:
        pooled = ",".join(map(str, seeds)) + " pooled"
        rows += [[pooled, *row] for row in compare(stacked(runs_a, seeds), stacked(runs_b, seeds),
                                                   args.variants, args.bootstrap)]
    print(markdown_table(["seed", "variant", f"Acc@1 {args.b.name} -> {args.a.name}", "MRR", "a minus b, MRR"],
                         rows))


if __name__ == "__main__":
    main()
