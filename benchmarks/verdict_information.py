"""What could a fusion get from a finished run's explanations? The verdicts, read by a fitted re-ranker.

A `recpie` run with ``explainer.encoder=verdict`` saves, per test sample, what its explanation says about
each of the K candidates ("may like" / "may not like" shares) in ``test_ranks_seed{S}.npz``. Its fusion
learns to use them in a few recommender steps; this asks what the same verdicts are worth to a re-ranker
fitted properly: a linear reader of the top-K (``recpie.explainer.information``) from the rank and the
recommender's logit, plus the prompt's facts, plus the verdicts, each cross-fitted over the test samples
(two seeded folds: no sample is scored by a reader fitted on it), and the same with another sample's
verdicts (the previous test sample's, as in the run's attribution). Verdicts beyond the facts reader
mean the explainer knows something the prompt's facts do not say; own above another's means it is the
content, not the presence, of an explanation.

    python benchmarks/verdict_information.py results/nyc_recpie_3pct [--seed 0]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from recpie.components.backbone import Backbone
from recpie.config import data_config, load_experiment
from recpie.data.load import load_checkin_data
from recpie.evaluation.bootstrap import paired_bootstrap_ci
from recpie.evaluation.tables import ci_text, markdown_table
from recpie.explainer.information import crossfit_ranks, features, prompt_facts, top_k
from recpie.utils.checkpoints import load_weights


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished recpie run folder (explainer.encoder=verdict)")
    ap.add_argument("--seed", type=int, default=0, help="which of its seeds")
    args = ap.parse_args(argv)
    cfg = load_experiment(str(args.run / "config.yaml"))
    with np.load(args.run / f"test_ranks_seed{args.seed}.npz", allow_pickle=False) as z:
        saved = dict(z)
    if "verdicts" not in saved:
        raise SystemExit(f"{args.run}: no per-sample verdicts saved (explainer.encoder=verdict runs only)")
    data = load_checkin_data(data_config(cfg))
    backbone = Backbone(cfg.backbone, data, cfg.data.max_len)  # the run's recommender, whose top-K was explained
    backbone.load_state_dict(load_weights(args.run / "checkpoints" / f"recpie-seed{args.seed}" / "last.ckpt",
                                          "run", "backbone."))
    ids, k = saved["ids"], cfg.explainer.num_candidates
    view = top_k(backbone, data, "test", ids, k, cfg.data.max_len, cfg.data.history_summary)
    same = (view.candidates == saved["candidates"]).all(1)  # ties may order a few differently
    facts = prompt_facts(data, "test", ids, view.candidates, cfg.explainer)
    own = np.where(same[:, None, None], saved["verdicts"], 0).astype(np.float32)
    other = np.roll(own, 1, axis=0)
    readers = {"rank + logit": np.zeros((len(ids), k, 0), np.float32), "+ prompt facts": facts,
               "+ prompt facts + own verdict": np.concatenate([facts, own], -1),
               "+ prompt facts + another sample's verdict": np.concatenate([facts, other], -1),
               "rank + logit + own verdict": own}
    ranks = {name: crossfit_ranks(features(view.logits, x), view.slot, view.ranks) for name, x in readers.items()}
    e = cfg.eval
    boot = dict(n_boot=e.bootstrap_samples, level=e.bootstrap_level, seed=e.bootstrap_seed)
    rows = [["recommender's order", f"{np.mean(view.ranks == 1):.4f}", f"{np.mean(1 / view.ranks):.4f}", "-", "-"]]
    for name, r in ranks.items():
        rows.append([name, f"{np.mean(r == 1):.4f}", f"{np.mean(1 / r):.4f}",
                     ci_text(paired_bootstrap_ci(r, view.ranks, "mrr", **boot)),
                     ci_text(paired_bootstrap_ci(r, ranks["+ prompt facts"], "mrr", **boot))])
    print(f"{args.run} seed {args.seed}: {len(ids)} test samples ({int((view.slot >= 0).sum())} with the target in "
          f"the top {k}; {int(same.sum())} whose saved candidates are the checkpoint's top {k}, the others "
          "read as unexplained); linear re-rankers of the top K, 2-fold cross-fitted over the test samples\n")
    print(markdown_table(["re-ranker", "Acc@1", "MRR", "MRR minus the recommender's order",
                          "MRR minus the facts reader"], rows))
    print("\nOwn minus another sample's verdict (with the facts): MRR " + ci_text(paired_bootstrap_ci(
        ranks["+ prompt facts + own verdict"], ranks["+ prompt facts + another sample's verdict"], "mrr", **boot)))


if __name__ == "__main__":
    main()
