"""What could a fusion get from a finished run's explanations? The verdicts, read by a fitted re-ranker; and,
on val, the gate before any long run (issue 22).

A `recpie` run with ``explainer.encoder=verdict`` saves, per sample, what its explanation says about each
of the K candidates ("may like" / "may not like" shares) and the candidates its prompt showed: the test
samples in ``test_ranks_seed{S}.npz``, the val samples it scored in ``val_verdicts_seed{S}.npz``. This asks
what those verdicts are worth to a re-ranker fitted properly: a linear reader of the top-K
(``recpie.explainer.information``) from the rank and the recommender's logit, plus the prompt's facts, plus
the verdicts, each cross-fitted over the split's samples (two seeded folds: no sample is scored by a
reader fitted on it), and the same with another sample's verdicts (the previous sample's, as in the run's
attribution). Verdicts beyond the facts reader mean the explainer knows something the prompt's facts do
not say; own above another's means it is the content, not the presence, of an explanation.

It also prints the gate of ``recpie.sft_target=facts``: how often "may like" names the teacher's top-1
(the prompt-only facts reader fitted on all val samples with the run's recommender, as the warm-up's
``FactsTeacher``, reading the prompts the explanations were written from), how often it names the target
against the recommender's own top-1 (paired CI), and the verdicts' gain beyond rank + logit (paired CI).
Run it on val after a warm-up (a run with ``recpie.cycles=1``, ``recpie.ppo_iterations=0`` and as many val
samples as the gate needs, e.g. ``recpie.val_samples=512``) before spending a long run's budget; if the
gate fails, change the warm-up, not the budget. The same numbers along the warm-up, from one run, are the
warm-up curve (``recpie.sft_eval_every``: warmup_curve_seed{S}.json), read by the same ``teacher_agreement``.

    python benchmarks/verdict_information.py results/nyc_recpie_3pct [--seed 0] [--split val] [--against TWIN]

With ``--against`` a twin's run folder (the same seed and samples: e.g. the frozen explainer a PPO run starts
from), the twin's saved verdicts are read by the same cross-fitted reader on this run's top K, and the line
printed is this run's verdicts' MRR minus the twin's: whether training made the verdicts worth more to a reader
fitted on them, apart from how well the run's own fusion (fitted on recpie.val_samples) priced them.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from recpie.components.backbone import Backbone
from recpie.config import data_config, load_experiment
from recpie.data.fraction import supervision_draw
from recpie.data.load import load_checkin_data
from recpie.evaluation.bootstrap import paired_bootstrap_ci, paired_values_ci
from recpie.evaluation.tables import ci_text, markdown_table
from recpie.evaluation.verdicts import departure_agreement, departure_precision, teacher_agreement
from recpie.explainer.information import crossfit_ranks, features, prompt_facts, prompt_reader, relay_verdicts, top_k
from recpie.utils.checkpoints import load_weights

SAVED = {"test": "test_ranks_seed{seed}.npz", "val": "val_verdicts_seed{seed}.npz"}  # what the recipe writes


def saved_verdicts(path: Path) -> dict[str, np.ndarray]:
    """The arrays a verdict run saved for one seed and split (``SAVED``), read without pickles."""
    if not path.exists():
        raise SystemExit(f"{path}: missing (a verdict run of this code writes it; explainer.encoder=verdict)")
    with np.load(path, allow_pickle=False) as z:
        saved = dict(z)
    if "verdicts" not in saved:
        raise SystemExit(f"{path}: no per-sample verdicts saved (explainer.encoder=verdict runs only)")
    return saved


def gate(liked: np.ndarray, candidates: np.ndarray, target: np.ndarray, teacher_top: np.ndarray, boot: dict
         ) -> dict:
    """The gate's numbers per sample: liked [n, K] "may like" shares, candidates [n, K] as the prompt showed
    them, target [n], teacher_top [n] the teacher's top-1 position. Agreement: the "may like" share on the
    teacher's top-1; hit rate: the share on the target, against the recommender's top-1 being it."""
    cols = teacher_agreement(torch.as_tensor(liked), torch.as_tensor(candidates), torch.as_tensor(target),
                             torch.as_tensor(teacher_top))
    departures = departure_agreement(cols)
    cols = {name: col.double().numpy() for name, col in cols.items()}
    return {"agreement": float(cols["agreement"].mean()), "parsed": float(cols["named"].mean()),
            "teacher_off_top1": float(cols["departs"].mean()), "agreement_off_top1": departures,
            "like_off_top1": float(cols["off_top1"].mean()),
            "hit": float(cols["hit"].mean()), "top1_hit": float(cols["top1_hit"].mean()),
            "teacher_hit": float(cols["teacher_hit"].mean()),
            "hit_minus_top1": paired_values_ci(cols["hit"], cols["top1_hit"], "hit rate", **boot)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a finished recpie run folder (explainer.encoder=verdict)")
    ap.add_argument("--seed", type=int, default=0, help="which of its seeds")
    ap.add_argument("--split", choices=sorted(SAVED), default="test", help="whose saved verdicts to read")
    ap.add_argument("--against", type=Path, default=None,
                    help="another run folder on the same samples (a twin): its verdicts read by the same "
                         "cross-fitted reader, this run's minus its (paired CI)")
    args = ap.parse_args(argv)
    cfg = load_experiment(str(args.run / "config.yaml"))
    saved_file = args.run / SAVED[args.split].format(seed=args.seed)
    saved = saved_verdicts(saved_file)
    data = load_checkin_data(data_config(cfg))
    backbone = Backbone(cfg.backbone, data, cfg.data.max_len)  # the run's recommender, whose top-K was explained
    backbone.load_state_dict(load_weights(args.run / "checkpoints" / f"recpie-seed{args.seed}" / "last.ckpt",
                                          "run", "backbone.", draw=supervision_draw(data)))
    ids, k, split = saved["ids"], cfg.explainer.num_candidates, args.split
    view = top_k(backbone, data, split, ids, k, cfg.data.max_len, cfg.data.history_summary)
    same = (view.candidates == saved["candidates"]).all(1)  # ties may order a few differently
    facts = prompt_facts(data, split, ids, view.candidates, cfg.explainer, view.logits)
    # the gate: the teacher reads the prompts the explanations were written from (the saved candidates)
    val_ids = np.arange(len(data.splits["val"]))
    val = top_k(backbone, data, "val", val_ids, k, cfg.data.max_len, cfg.data.history_summary)
    teacher = prompt_reader(val, prompt_facts(data, "val", val_ids, val.candidates, cfg.explainer, val.logits))
    shown = np.where(saved["candidates"] >= 0, saved["candidates"], view.candidates)
    shown_logits = None  # what a prompt of explainer.show_scores stated beside the candidates
    if cfg.explainer.show_scores:
        if "logits" not in saved:
            raise SystemExit(f"{saved_file}: no candidate logits saved, but the run's prompts stated the "
                             "recommender's scores (explainer.show_scores); a run of this code saves them")
        kept = (saved["candidates"] >= 0).all(1) & np.isfinite(saved["logits"]).all(1)
        shown_logits = np.where(kept[:, None], saved["logits"], view.logits)
    with torch.no_grad():
        scores = teacher(features(prompt_facts(data, split, ids, shown, cfg.explainer, shown_logits))
                         ).squeeze(-1).numpy()
    teacher_order = np.argsort(-scores, 1, kind="stable")
    own = np.where(same[:, None, None], saved["verdicts"], 0).astype(np.float32)
    other = np.roll(own, 1, axis=0)
    none = np.zeros((len(ids), k, 0), np.float32)
    readers = {"rank + logit": none, "+ prompt facts": facts,
               "+ prompt facts + own verdict": np.concatenate([facts, own], -1),
               "+ prompt facts + another sample's verdict": np.concatenate([facts, other], -1),
               "rank + logit + own verdict": own,
               # the relay ceiling on these samples: an explainer naming the teacher's top-1 / lowest on every one
               "rank + logit + the teacher's relayed verdict": np.where(
                   same[:, None, None], relay_verdicts(teacher_order, np.ones(len(ids), bool)).numpy(), 0)}
    ranks = {name: crossfit_ranks(features(x, view.logits), view.slot, view.ranks) for name, x in readers.items()}
    e = cfg.eval
    boot = dict(n_boot=e.bootstrap_samples, level=e.bootstrap_level, seed=e.bootstrap_seed)
    rows = [["recommender's order", f"{np.mean(view.ranks == 1):.4f}", f"{np.mean(1 / view.ranks):.4f}", "-", "-"]]
    for name, r in ranks.items():
        rows.append([name, f"{np.mean(r == 1):.4f}", f"{np.mean(1 / r):.4f}",
                     ci_text(paired_bootstrap_ci(r, view.ranks, "mrr", **boot)),
                     ci_text(paired_bootstrap_ci(r, ranks["+ prompt facts"], "mrr", **boot))])
    print(f"{args.run} seed {args.seed}: {len(ids)} {split} samples ({int((view.slot >= 0).sum())} with the target "
          f"in the top {k}; {int(same.sum())} whose saved candidates are the checkpoint's top {k}, the others "
          f"read as unexplained); linear re-rankers of the top K, 2-fold cross-fitted over the {split} samples\n")
    print(markdown_table(["re-ranker", "Acc@1", "MRR", "MRR minus the recommender's order",
                          "MRR minus the facts reader"], rows))
    print("\nOwn minus another sample's verdict (with the facts): MRR " + ci_text(paired_bootstrap_ci(
        ranks["+ prompt facts + own verdict"], ranks["+ prompt facts + another sample's verdict"], "mrr", **boot)))

    if args.against is not None:
        twin = saved_verdicts(args.against / SAVED[split].format(seed=args.seed))
        if not np.array_equal(twin["ids"], ids):
            raise SystemExit(f"{args.against}: other {split} samples than {args.run}: not a paired comparison")
        twin_same = (view.candidates == twin["candidates"]).all(1)
        twin_own = np.where(twin_same[:, None, None], twin["verdicts"], 0).astype(np.float32)
        twin_ranks = crossfit_ranks(features(twin_own, view.logits), view.slot, view.ranks)
        print(f"\nOwn verdicts beyond rank + logit, the same cross-fitted reader ({int(twin_same.sum())} of "
              f"{args.against.name}'s samples explained on this run's top {k}): MRR {np.mean(1 / twin_ranks):.4f} "
              f"-> {np.mean(1 / ranks['rank + logit + own verdict']):.4f}, this run minus {args.against.name} "
              + ci_text(paired_bootstrap_ci(ranks["rank + logit + own verdict"], twin_ranks, "mrr", **boot)))

    g = gate(saved["verdicts"][..., 0], shown, view.target, teacher_order[:, 0], boot)
    beyond = paired_bootstrap_ci(ranks["rank + logit + own verdict"], ranks["rank + logit"], "mrr", **boot)
    print(f"\nGate ({split}, {len(ids)} samples; parsed {g['parsed']:.3f}): \"may like\" names the teacher's top-1 "
          f"in {g['agreement']:.3f} (the teacher, fitted on {int((val.slot >= 0).sum())} val samples, names the "
          f"target in {g['teacher_hit']:.3f}); \"may like\" names the target in {g['hit']:.3f}, the recommender's "
          f"top-1 in {g['top1_hit']:.3f}: {ci_text(g['hit_minus_top1'])}; the verdicts beyond rank + logit: MRR "
          f"{ci_text(beyond)}. Where the teacher's top-1 is not the recommender's ({g['teacher_off_top1']:.3f} of "
          f"the samples, what naming candidate 1 always misses) \"may like\" names it in "
          f"{g['agreement_off_top1']:.3f}; \"may like\" names another candidate than the first in "
          f"{g['like_off_top1']:.3f}")
    precision = departure_precision(torch.as_tensor(saved["verdicts"][..., 0]), torch.as_tensor(shown),
                                    torch.as_tensor(view.target), torch.as_tensor(teacher_order[:, 0]))
    print("\nWhere a verdict can pay: departures from candidate 1 pay only where the named candidate is the target "
          "more often than candidate 1 on the same samples\n")
    print(markdown_table(["samples", "how many", "target is the named candidate", "target is candidate 1"],
                         [[name, str(v["samples"]), f"{v['named']:.3f}", f"{v['first']:.3f}"]
                          for name, v in precision.items()]))


if __name__ == "__main__":
    main()
